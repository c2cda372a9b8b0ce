# Shared settings for the hack/ scripts: pinned versions, where binaries are cached, where the
# local stack keeps its state. Sourced, never run.

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.9
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.21.4

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$HACK_DIR")

# Binaries are built once per machine and version, outside the repo, so a fresh clone reuses them.
CACHE_DIR=${TEAM_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/team-operator}
BIN_DIR=$CACHE_DIR/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION

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
export PATH=$BIN_DIR:$PATH

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
