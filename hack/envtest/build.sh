#!/usr/bin/env bash
# Build (or reuse) kube-apiserver and etcd for the test environment.
#
# Prints the directory holding both binaries: the same layout as envtest's
# KUBEBUILDER_ASSETS, which the Rust test support also accepts.
# The result is cached under $ECS_OPERATOR_CACHE (default ~/.cache/ecs-operator),
# keyed by a hash of this module's sources, so a second run costs nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
command -v go >/dev/null || { echo "build.sh: Go >= 1.26 is required to build kube-apiserver (or set KUBEBUILDER_ASSETS)" >&2; exit 1; }

version=$(GOTOOLCHAIN=local GOFLAGS=-mod=readonly go list -m -f '{{.Version}}' k8s.io/kubernetes)
[ -n "$version" ] || { echo "build.sh: go.mod does not require k8s.io/kubernetes" >&2; exit 1; }
minor=$(cut -d. -f2 <<<"${version#v}")

gover=$(go env GOVERSION)
case "$gover" in
  go1.2[6-9]*|go1.[3-9]*) ;;
  *) echo "build.sh: Go >= 1.26 required, found $gover" >&2; exit 1 ;;
esac
# Go 1.27 switches encoding/json to v2 by default, which breaks kube-openapi.
case "$gover" in
  go1.26*) ;;
  *) export GOEXPERIMENT="${GOEXPERIMENT:+$GOEXPERIMENT,}nojsonv2" ;;
esac

cache=${ECS_OPERATOR_CACHE:-$HOME/.cache/ecs-operator}
key=$(cat go.mod go.sum build.sh cmd/*/main.go | sha256sum | cut -c1-16)
out="$cache/envtest/k8s-$version-$key"
if [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$out.tmp"
ldflags="-s -w \
  -X k8s.io/component-base/version.gitVersion=$version \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$minor \
  -X k8s.io/component-base/version.gitTreeState=clean"
start=$(date +%s)
echo "build.sh: building kube-apiserver $version and etcd (cold: several minutes)..." >&2
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
go build -trimpath -ldflags "$ldflags" -o "$out.tmp/kube-apiserver" ./cmd/kube-apiserver >&2
go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" ./cmd/etcd >&2
rm -rf "$out"
mv "$out.tmp" "$out"
echo "build.sh: built in $(( $(date +%s) - start ))s -> $out" >&2
echo "$out"
