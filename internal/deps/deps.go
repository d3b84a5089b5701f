//go:build tools

// Package deps pins the modules that the packages use, so go.mod stays tidy while they are written.
package deps

import (
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/testutil"
	_ "github.com/slack-go/slack"
	_ "github.com/spf13/cobra"
	_ "go.uber.org/goleak"
	_ "gopkg.in/yaml.v3"
	_ "k8s.io/client-go/informers"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/client-go/tools/leaderelection"
	_ "k8s.io/client-go/tools/remotecommand"
)
