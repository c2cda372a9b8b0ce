# shellcheck shell=bash disable=SC2034 # sourced; the scripts use its variables
# Shared settings for the hack/ scripts: pinned versions, where binaries are cached, where the
# local stack keeps its state. Sourced, never run.

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.9
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.21.4
# The real node beside the kwok nodes (kubelet and kube-proxy come with K8S_VERSION).
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.3.3
CNI_PLUGINS_VERSION=v1.10.0
COREDNS_VERSION=v1.15.0

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$HACK_DIR")

# Binaries are built once per machine and version, outside the repo, so a fresh clone reuses them.
CACHE_DIR=${TEAM_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/team-operator}
BIN_DIR=$CACHE_DIR/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION
# containerd, ctr, the runc shim, runc, coredns; CNI plugins in $NODE_BIN_DIR/cni.
NODE_BIN_DIR=$CACHE_DIR/bin/node-containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION-cni-$CNI_PLUGINS_VERSION-coredns-$COREDNS_VERSION

# NODE=1 (default): the stack runs a real node (kubelet, containerd, runc, CNI bridge, kube-proxy,
# CoreDNS) beside the kwok nodes. NODE=0: kwok only, nothing outside loopback, no root needed.
NODE=${NODE:-1}

# State of the running stack: certificates, data, logs, pids, the admin kubeconfig.
STACK_DIR=${TEAM_OPERATOR_STACK:-$CACHE_DIR/stack}
KUBECONFIG_PATH=$STACK_DIR/admin.kubeconfig

# Loopback ports; override to run two stacks side by side.
ETCD_PORT=${ETCD_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
APISERVER_PORT=${APISERVER_PORT:-16443}
REDIS_PORT=${REDIS_PORT:-16379}
KWOK_NODES=${KWOK_NODES:-4}

export GOTOOLCHAIN=local

# One cargo build serves the tests, the local processes and the images: every crate built for the
# explicit host target with glibc's crt-static, so `teamctl` (copied into images of any libc by the
# member pods' init container) and `team-operator` need no shared library. `--target` keeps build
# scripts and proc macros dynamic. Outputs land in $CARGO_OUT/debug (a plain `cargo build` without
# these variables builds a second, dynamic copy in target/debug).
export CARGO_BUILD_TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
CARGO_OUT=${CARGO_TARGET_DIR:-$REPO_DIR/target}/$CARGO_BUILD_TARGET
export PATH=$BIN_DIR:$PATH

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
