// Command deploycheck checks the manifests under deploy/ without a cluster.
// It builds the kustomize overlays, renders the Helm chart and decodes
// every object strictly into its Kubernetes type. Then it checks the
// security settings, the RBAC against the configuration it serves, the
// dashboard and the alerting rules. `make lint-deploy` runs it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

func main() {
	root := flag.String("root", ".", "repository root")
	helm := flag.String("helm", "bin/helm", "helm binary that renders the chart")
	promtool := flag.String("promtool", "promtool", "promtool binary that checks dashboard queries")
	sync := flag.Bool("sync", false, "write the chart's copies of the rules and dashboard and the PrometheusRule form, then exit")
	flag.Parse()

	if *sync {
		if err := syncCopies(*root); err != nil {
			fmt.Fprintln(os.Stderr, "deploycheck:", err)
			os.Exit(1)
		}
		return
	}

	err := checkAll(*root, *helm, *promtool)
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploycheck: FAILED")
		for _, e := range unjoin(err) {
			fmt.Fprintf(os.Stderr, "  %v\n", e)
		}
		os.Exit(1)
	}
	fmt.Println("deploycheck: ok")
}

// unjoin flattens errors.Join trees so that each failure prints on a line.
func unjoin(err error) []error {
	var j interface{ Unwrap() []error }
	if !errors.As(err, &j) {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, unjoin(e)...)
	}
	return out
}
