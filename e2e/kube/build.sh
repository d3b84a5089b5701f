#!/usr/bin/env bash
# Builds the cluster binaries that the end-to-end harness runs: etcd,
# kube-apiserver, kube-controller-manager and kubectl, all version-matched,
# into CACHE/kube-<version>/. A complete folder is reused as it is.
#
#   build.sh CACHE              build what is missing, print progress
#   build.sh --print-dir CACHE  print the folder the binaries live in
set -euo pipefail

KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.7.0
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl)

usage() {
	echo "usage: $0 [--print-dir] CACHE_DIR" >&2
	exit 2
}

print_dir=false
if [[ "${1:-}" == "--print-dir" ]]; then
	print_dir=true
	shift
fi
[[ $# -eq 1 && -n "$1" ]] || usage

cache="$1"
dir="$cache/kube-$KUBE_VERSION"
stamp="$dir/.complete-etcd-$ETCD_VERSION"

if $print_dir; then
	echo "$dir"
	exit 0
fi

if [[ -f "$stamp" ]]; then
	echo "kube-bins: $dir is complete, nothing to build"
	exit 0
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# The version the binaries report; kubectl warns about skew without it.
pkg=k8s.io/component-base/version
minor="${KUBE_VERSION#v1.}"
minor="${minor%%.*}"
ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1"
ldflags+=" -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"

start=$SECONDS
step=0
build() {
	local name="$1" moddir="$2" target="$3" flags="$4"
	step=$((step + 1))
	if [[ -x "$dir/$name" ]]; then
		echo "kube-bins: [$step/${#BINARIES[@]}] $name already built"
		return
	fi
	echo "kube-bins: [$step/${#BINARIES[@]}] building $name ($((SECONDS - start))s so far)"
	(cd "$moddir" && CGO_ENABLED=0 go build -trimpath -ldflags "$flags" \
		-o "$tmp/$name" "$target")
	mv "$tmp/$name" "$dir/$name"
}

build etcd "$here/etcd" . "-s -w"
build kube-apiserver "$here" k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
build kube-controller-manager "$here" k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags"
build kubectl "$here" k8s.io/kubernetes/cmd/kubectl "$ldflags"

touch "$stamp"
echo "kube-bins: done in $((SECONDS - start))s: $dir"
