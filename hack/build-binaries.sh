#!/usr/bin/env bash
# Builds the control-plane binaries from the Go module proxy into the per-version cache:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (through the wrapper module in
# hack/go/kubernetes), etcd (hack/go/etcd), kwok and helm (hack/go/tools); with NODE=1 (default)
# also the real node's kubelet and kube-proxy (hack/go/kubernetes), containerd, ctr and the runc
# shim (hack/go/containerd), runc (hack/go/runc, cgo with seccomp), the CNI plugins (hack/go/cni)
# and CoreDNS (hack/go/coredns). Skips what is cached. Go builds run under `nice`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

mkdir -p "$BIN_DIR"
((NODE)) && mkdir -p "$NODE_BIN_DIR/cni"
build_dir=$(mktemp -d)
trap 'rm -rf "$build_dir"' EXIT

# go build run in a wrapper module, output into the cache only once it succeeded.
# OUT (default $BIN_DIR) is the target directory, CGO (default 0) the CGO_ENABLED value.
# `.<name>.args` beside each binary records its build arguments: a binary is built again when
# they change (a binary cached before the stamps existed is taken as built with today's).
build() { # <module dir> <output name> <package> [extra go build args…]
  local mod=$1 name=$2 pkg=$3 out=${OUT:-$BIN_DIR}; shift 3
  local stamp=$out/.$name.args args="$pkg $* CGO=${CGO:-0}"
  if [[ -x $out/$name ]]; then
    [[ -f $stamp ]] || echo "$args" >"$stamp"
    [[ $(cat "$stamp") == "$args" ]] && return
  fi
  log "building $name ($pkg) — first run on this machine only"
  local start=$SECONDS
  (cd "$HACK_DIR/go/$mod" && CGO_ENABLED=${CGO:-0} nice -n 10 go build -trimpath "$@" -o "$build_dir/$name" "$pkg")
  mv "$build_dir/$name" "$out/$name"
  echo "$args" >"$stamp"
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
# The Kubernetes version `helm template` assumes without a cluster (upstream sets it from its
# client-go; unset, it is v1.20 and the chart's kubeVersion refuses it): the stack's.
build tools helm helm.sh/helm/v3/cmd/helm \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"

if ((NODE)); then
  for cmd in kubelet kube-proxy; do
    build kubernetes "$cmd" "k8s.io/kubernetes/cmd/$cmd" -ldflags "$k8s_ldflags"
  done
  # No btrfs/devmapper/zfs snapshotters: they need cgo headers and are not used (overlayfs).
  ctrd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  for cmd in containerd ctr containerd-shim-runc-v2; do
    OUT=$NODE_BIN_DIR build containerd "$cmd" "github.com/containerd/containerd/v2/cmd/$cmd" \
      -tags "no_btrfs no_devmapper no_zfs" -ldflags "$ctrd_ldflags"
  done
  # runc needs cgo for libseccomp (seccomp profiles, e.g. RuntimeDefault).
  OUT=$NODE_BIN_DIR CGO=1 build runc runc github.com/opencontainers/runc \
    -tags seccomp -ldflags "-s -w -X main.version=${RUNC_VERSION#v}"
  for plugin in main/bridge ipam/host-local main/loopback meta/portmap; do
    OUT=$NODE_BIN_DIR/cni build cni "${plugin#*/}" "github.com/containernetworking/plugins/plugins/$plugin" \
      -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION"
  done
  # CoreDNS with only the plugins the stack's Corefile uses (hack/go/coredns/main.go).
  OUT=$NODE_BIN_DIR build coredns coredns . -ldflags "-s -w"
fi

if ((NODE)); then log "binaries ready in $BIN_DIR and $NODE_BIN_DIR"; else log "binaries ready in $BIN_DIR"; fi
