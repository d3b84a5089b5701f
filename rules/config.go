package rules

import (
	"errors"
	"fmt"
)

// Config is the "rules" section of the authwatch configuration file. The
// command reads the files and passes their content to Compile as Packs,
// since this package does no I/O.
type Config struct {
	// Files are user rule packs, applied in order on top of the default
	// pack. A relative path is relative to the configuration file.
	Files []string `yaml:"files" config:"file"`
	// Disable turns off rules by id.
	Disable []string `yaml:"disable"`
}

// Validate reports empty entries with their YAML paths under "rules".
// Compile reports unknown rule ids, because only it has the packs.
func (c Config) Validate() error {
	var errs []error
	for i, f := range c.Files {
		if f == "" {
			errs = append(errs, fmt.Errorf("rules.files[%d]: empty path; remove the entry or name a rule pack file", i))
		}
	}
	for i, id := range c.Disable {
		if id == "" {
			errs = append(errs, fmt.Errorf("rules.disable[%d]: empty rule id; remove the entry", i))
		}
	}
	return errors.Join(errs...)
}
