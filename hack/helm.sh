#!/usr/bin/env bash
# Prints the path of the pinned helm CLI, building it from its official Go module on
# first use (no binary downloads here) and caching it under $ECS_OPERATOR_CACHE/bin.
set -euo pipefail
HELM_VERSION=v3.22.0
cache=${ECS_OPERATOR_CACHE:-$HOME/.cache/ecs-operator}
bin="$cache/bin/helm-$HELM_VERSION"
if [[ ! -x $bin ]]; then
  echo "building helm $HELM_VERSION from helm.sh/helm/v3 (first time only)" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  mkdir -p "$cache/bin"
  mv "$tmp/helm" "$bin"
fi
echo "$bin"
