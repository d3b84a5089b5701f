# authwatch build and test entry points. `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
BIN := bin
# Cluster binaries (etcd, kube-apiserver, kube-controller-manager, kubectl)
# are built once per version into this cache and reused.
KUBE_CACHE ?= $(HOME)/.cache/authwatch
FUZZTIME ?= 15s

.PHONY: all build test test-unit test-e2e fuzz demo kube-bins bench-scan clean

all: build

build:
	$(GO) build -o $(BIN)/authwatch ./cmd/authwatch

# The full suite: unit tests with the race detector, short fuzz runs and the
# end-to-end tests against a real control plane.
test: test-unit fuzz test-e2e

test-unit:
	$(GO) test -race -count=1 ./...

# Each fuzz target runs for FUZZTIME; go test -fuzz takes one target a run.
FUZZ_TARGETS :=

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

kube-bins:
	./e2e/kube/build.sh "$(KUBE_CACHE)"

test-e2e: kube-bins build
	AUTHWATCH_KUBE_BIN="$$(./e2e/kube/build.sh --print-dir "$(KUBE_CACHE)")" \
		$(GO) test -tags e2e -count=1 -timeout 30m ./e2e/...

demo: kube-bins build

bench-scan: build
	./bench/scan.sh

clean:
	rm -rf $(BIN)
