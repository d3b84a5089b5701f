# authwatch build and test entry points. `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
BIN := bin
# Cluster binaries (etcd, kube-apiserver, kube-controller-manager, kubectl)
# are built once per version into this cache and reused.
KUBE_CACHE ?= $(HOME)/.cache/authwatch
FUZZTIME ?= 15s
# Helm is a Go tool of the separate module in tools/, so that its
# dependencies never enter the main go.mod. Defined before any rule that
# names it, because make expands prerequisites as it reads them.
HELM := $(BIN)/helm
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build test test-unit test-e2e fuzz demo kube-bins bench-scan bench-watch clean lint-deploy deploy-sync

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/authwatch ./cmd/authwatch

# The full suite: unit tests with the race detector, short fuzz runs and the
# end-to-end tests against a real control plane.
test: test-unit lint-deploy fuzz test-e2e

# gofmt and go vet first: a formatting slip or a vet finding fails fast.
test-unit:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...
	$(GO) test -race -count=1 ./...

# Each fuzz target runs for FUZZTIME; go test -fuzz takes one target a run.
FUZZ_TARGETS := ./alerting:FuzzSlackBlocksWithinLimits ./remediation:FuzzValidateToken ./rules:FuzzCompile ./rules:FuzzMatch ./rules/logfile:FuzzReader ./watcher:FuzzLineReader ./cmd/authwatch:FuzzDecodeConfig

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

kube-bins:
	./e2e/kube/build.sh "$(KUBE_CACHE)"

test-e2e: kube-bins build $(HELM)
	AUTHWATCH_KUBE_BIN="$$(./e2e/kube/build.sh --print-dir "$(KUBE_CACHE)")" \
		$(GO) test -tags e2e -count=1 -timeout 30m ./e2e/...

# A control plane with a workload whose token expired, and authwatch
# watching it, until Ctrl-C. DEMO_LISTEN is authwatch's metrics address.
DEMO_LISTEN ?= 127.0.0.1:9090

demo: kube-bins build
	$(GO) build -o $(BIN)/authwatch-demo ./e2e/demo
	AUTHWATCH_KUBE_BIN="$$(./e2e/kube/build.sh --print-dir "$(KUBE_CACHE)")" \
		$(BIN)/authwatch-demo -authwatch $(BIN)/authwatch -listen-address $(DEMO_LISTEN)

bench-scan: build
	./bench/scan.sh

bench-watch: build
	./bench/watch.sh

# Helm is a Go tool of the separate module in tools/ (rule below).
$(HELM): tools/go.mod tools/go.sum
	cd tools && $(GO) build -o ../$(HELM) helm.sh/helm/v4/cmd/helm

# Static checks of deploy/: the chart lints and renders, the alerting rules
# parse and pass their promtool tests, and deploycheck decodes every
# kustomize and Helm object strictly and checks security settings, RBAC
# against the configuration, the dashboard and the copies of the rules.
lint-deploy: $(HELM)
	$(HELM) lint --strict deploy/helm/authwatch
	$(HELM) lint --strict deploy/helm/authwatch --values deploy/helm/authwatch/ci/full-values.yaml
	promtool check rules deploy/prometheus/rules.yaml
	promtool test rules deploy/prometheus/rules_test.yaml
	cd tools && $(GO) test -count=1 ./deploycheck/
	cd tools && $(GO) run ./deploycheck -root .. -helm ../$(HELM)

# Rewrites the chart's copies of the rules and the dashboard, and the
# PrometheusRule form of the rules, after an edit of either source.
deploy-sync:
	cd tools && $(GO) run ./deploycheck -root .. -sync

clean:
	rm -rf $(BIN)
