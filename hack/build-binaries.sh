#!/usr/bin/env bash
# Builds the control-plane binaries from the Go module proxy into the per-version cache:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (through the wrapper module in
# hack/go/kubernetes), etcd (hack/go/etcd), kwok and helm (hack/go/tools). Skips what is cached.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

mkdir -p "$BIN_DIR"
build_dir=$(mktemp -d)
trap 'rm -rf "$build_dir"' EXIT

# go build run in a wrapper module, output into the cache only once it succeeded.
build() { # <module dir> <output name> <package> [extra go build args…]
  local mod=$1 name=$2 pkg=$3; shift 3
  if [[ -x $BIN_DIR/$name ]]; then return; fi
  log "building $name ($pkg) — first run on this machine only"
  local start=$SECONDS
  (cd "$HACK_DIR/go/$mod" && CGO_ENABLED=0 go build -trimpath "$@" -o "$build_dir/$name" "$pkg")
  mv "$build_dir/$name" "$BIN_DIR/$name"
  log "built $name in $((SECONDS - start))s"
}

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
k8s_ldflags="-s -w \
  -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$minor \
  -X k8s.io/component-base/version.gitTreeState=clean \
  -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION \
  -X k8s.io/client-go/pkg/version.gitMajor=1 \
  -X k8s.io/client-go/pkg/version.gitMinor=$minor"

for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build kubernetes "$cmd" "k8s.io/kubernetes/cmd/$cmd" -ldflags "$k8s_ldflags"
done
build etcd etcd go.etcd.io/etcd/server/v3 -ldflags "-s -w"
build tools kwok sigs.k8s.io/kwok/cmd/kwok -ldflags "-s -w"
build tools helm helm.sh/helm/v3/cmd/helm \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"

log "binaries ready in $BIN_DIR"
