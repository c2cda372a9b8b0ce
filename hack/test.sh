#!/usr/bin/env bash
# Runs every cargo test against the local stack. Starts the stack if it is not up and then stops
# it again at the end (also on failure or interrupt); leaves an already running stack alone.
# Exits with cargo's status.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

"$HACK_DIR/setup.sh"
"$HACK_DIR/build-binaries.sh"

brought_up=0
if "$HACK_DIR/stack.sh" status >/dev/null 2>&1; then
  log "using the running stack"
else
  brought_up=1
  trap '"$HACK_DIR/stack.sh" down || true' EXIT
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
cargo test --lib --bins --tests -- --test-threads=4 || rc=$?
if ((brought_up)); then log "stopping the stack this run started"; fi
exit $rc
