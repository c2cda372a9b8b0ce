#!/usr/bin/env bash
# Runs every cargo test against the local stack, then the suites that use Redis (bus, memory,
# gateway, controller) a second time against a 3-primary Redis Cluster (hack/redis-cluster.sh).
# Starts the stack and the cluster if they are not up and stops what it started at the end (also
# on failure or interrupt); leaves what was already running alone. Exits 0 when both runs pass,
# else with the first failing cargo's status.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

"$HACK_DIR/setup.sh"
"$HACK_DIR/build-binaries.sh"

brought_up=0 cluster_up=0
# What this run started, stopped on any exit: the stack (whose down also stops the cluster), or
# the cluster alone.
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  if ((brought_up)); then
    "$HACK_DIR/stack.sh" down || true
  elif ((cluster_up)); then
    "$HACK_DIR/stack.sh" redis-cluster down || true
  fi
}
trap cleanup EXIT
if "$HACK_DIR/stack.sh" status >/dev/null 2>&1; then
  log "using the running stack"
else
  brought_up=1
  "$HACK_DIR/stack.sh" up
fi

eval "$("$HACK_DIR/stack.sh" env)"
log "KUBECONFIG=$KUBECONFIG TEAM_OPERATOR_REDIS_URL=$TEAM_OPERATOR_REDIS_URL"

cd "$REPO_DIR"
rc=0
if ((NODE)); then
  # The project image for the real node, from the same static debug build `cargo test` then
  # reuses (one build of the crate; hack/lib.sh sets the target and crt-static), and the agent
  # runtimes' images (tests/loop.rs runs opencode, Claude Code and Codex in real containers).
  cargo build --bins
  "$HACK_DIR/images.sh" project opencode claude codex
fi
cargo test --no-fail-fast --lib --bins --tests -- --test-threads=4 || rc=$?

# The bus's path past one Redis: the same suites on a Redis Cluster (keys of a team in one slot,
# scripts within it, connections that follow the cluster's nodes).
if "$HACK_DIR/stack.sh" redis-cluster status >/dev/null 2>&1; then
  log "using the running redis cluster"
else
  cluster_up=1
  "$HACK_DIR/stack.sh" redis-cluster up
fi
seeds=$("$HACK_DIR/stack.sh" redis-cluster env | sed -n 's/^export TEAM_OPERATOR_REDIS_URL=//p')
log "again on the redis cluster: TEAM_OPERATOR_REDIS_URL=$seeds"
TEAM_OPERATOR_REDIS_CLUSTER=1 TEAM_OPERATOR_REDIS_URL=$seeds \
  cargo test --no-fail-fast --test bus --test memory --test gateway --test controller -- --test-threads=4 ||
  { c=$?; ((rc)) || rc=$c; }
if ((brought_up)); then log "stopping the stack this run started"; elif ((cluster_up)); then log "stopping the redis cluster this run started"; fi
exit $rc
