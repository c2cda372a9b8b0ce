#!/usr/bin/env bash
# `make demo`: a spec-review team at work on the local stack, in one command.
#
#   hack/demo.sh        build, bring up the stack, run the operator and the gateway, apply
#                       examples/spec-review.yaml in namespace `demo`, run the agents, print
#                       `teamctl watch --once -n demo`; exit 0 only at a Disbanded team with one
#                       failed and four completed specialists
#   hack/demo.sh down   stop the local processes a demo started (not the stack)
#
# kwok pods run no containers. So each member's agent (examples/agents/spec-review-agent.sh) runs
# here as a local process, with the TEAM_* environment of its pod and a token bound to that pod
# (kubectl create token … --bound-object-kind Pod), exactly what the gateway would get from a real
# member pod. When the process exits, its exit code goes onto the pod as the annotation
# agentteams.dev/sim-exit-code, and kwok ends the pod the same way (0 → Succeeded, 137 → Failed
# OOMKilled).
#
# Env: DEMO_GATEWAY_PORT (18080), DEMO_METRICS_PORT (18081), DEMO_TIMEOUT (300 s for the team to
# disband), DEMO_WORK_SECONDS (2, how long each agent "works" per step).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NS=demo
TEAM=spec-review
GATEWAY_PORT=${DEMO_GATEWAY_PORT:-18080}
METRICS_PORT=${DEMO_METRICS_PORT:-18081}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-300}
DEMO_DIR=$STACK_DIR/demo
PIDFILE=$DEMO_DIR/pids
TARGET=$CARGO_OUT/debug
AGENT=$REPO_DIR/examples/agents/spec-review-agent.sh

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
[[ -t 2 ]] || say() { printf '==> %s\n' "$*" >&2; }

# Stops what a demo recorded in $PIDFILE (process groups started with setsid), by pid only.
stop_local() {
  [[ -f $PIDFILE ]] || return 0
  local pid
  while read -r pid _; do
    [[ -n $pid ]] && kill -TERM -- "-$pid" 2>/dev/null || true
  done <"$PIDFILE"
  sleep 0.3
  while read -r pid _; do
    [[ -n $pid ]] && kill -KILL -- "-$pid" 2>/dev/null || true
  done <"$PIDFILE"
  rm -f "$PIDFILE"
}

if [[ ${1:-} == down ]]; then
  stop_local
  log "stopped the demo's local processes (the stack keeps running; make stack-down stops it)"
  exit 0
fi

# Starts "$@" in its own process group with output to $DEMO_DIR/logs/$name.log; records the pid.
start() {
  local name=$1; shift
  setsid "$@" >"$DEMO_DIR/logs/$name.log" 2>&1 </dev/null &
  echo "$! $name" >>"$PIDFILE"
}

wait_http() { # url what
  local i
  for ((i = 0; i < 120; i++)); do
    curl -sf --max-time 1 "$1" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "$2 did not become ready at $1 (log: $DEMO_DIR/logs/)"
}

say "machine set-up (apt, pip; fast when done before)"
"$HACK_DIR/setup.sh"

say "building team-operator and teamctl (debug)"
(cd "$REPO_DIR" && cargo build --bins)

say "control-plane binaries (built once per machine; the first build takes long)"
"$HACK_DIR/build-binaries.sh"
say "local stack"
"$HACK_DIR/stack.sh" up
eval "$("$HACK_DIR/stack.sh" env)"
export PATH=$TARGET:$PATH

stop_local
mkdir -p "$DEMO_DIR/logs" "$DEMO_DIR/tokens"
rm -f "$DEMO_DIR"/logs/*.log "$DEMO_DIR"/tokens/* "$DEMO_DIR"/*.exit
trap 'stop_local' EXIT

say "CRDs"
kubectl apply -f "$REPO_DIR/crds/" >/dev/null
kubectl wait --for condition=Established --timeout 60s crd/teams.agentteams.dev crd/members.agentteams.dev crd/teamtasks.agentteams.dev >/dev/null
kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS" >/dev/null

say "operator (team-operator controller --namespace $NS) and gateway (127.0.0.1:$GATEWAY_PORT), logs in $DEMO_DIR/logs"
start controller env RUST_LOG=info,kube_runtime=warn "$TARGET/team-operator" controller --namespace "$NS" --max-agents 10 \
  --gateway-url "http://127.0.0.1:$GATEWAY_PORT" --metrics-addr "127.0.0.1:$METRICS_PORT"
start gateway env RUST_LOG=info "$TARGET/team-operator" gateway --listen "127.0.0.1:$GATEWAY_PORT"
wait_http "http://127.0.0.1:$METRICS_PORT/readyz" "the controller"
wait_http "http://127.0.0.1:$GATEWAY_PORT/readyz" "the gateway"

previous=$(kubectl -n "$NS" get teams,members,teamtasks -o name 2>/dev/null || true)
if [[ -n $previous ]]; then
  say "removing the previous demo's team"
  kubectl -n "$NS" delete teams,members,teamtasks --all --wait --timeout 60s >/dev/null
fi
kubectl -n "$NS" delete pods -l agentteams.dev/team="$TEAM" --grace-period 0 --wait --timeout 30s >/dev/null 2>&1 || true

say "applying examples/spec-review.yaml: a lead and five specialists, at most 3 at a time"
kubectl -n "$NS" apply -f "$REPO_DIR/examples/spec-review.yaml" >/dev/null

# Runs the agent of a Running pod as a local process with the pod's env and a token bound to it;
# then puts its exit code on the pod.
run_agent() { # pod uid serviceaccount member
  local pod=$1 uid=$2 sa=$3 member=$4 token=$DEMO_DIR/tokens/$1
  kubectl -n "$NS" create token "$sa" --audience team-operator-gateway --bound-object-kind Pod \
    --bound-object-name "$pod" --bound-object-uid "$uid" --duration 1h >"$token"
  local envfile=$DEMO_DIR/tokens/$pod.env
  kubectl -n "$NS" get pod "$pod" -o json |
    jq -r '.spec.containers[0].env[] | select(.value != null) | "export \(.name)=\(.value | @sh)"' >"$envfile"
  echo "export TEAM_TOKEN_FILE=$token" >>"$envfile"
  start "agent-$member" bash -c '
    source "$1"; code=0; sh "$2" || code=$?
    echo "$code" >"$3"
    kubectl -n "$4" annotate pod "$5" --overwrite agentteams.dev/sim-exit-code="$code" >/dev/null' \
    _ "$envfile" "$AGENT" "$DEMO_DIR/$member.exit" "$NS" "$pod"
}

declare -A started=() phase_seen=() exit_seen=()
snapshot_shown=0
deadline=$((SECONDS + DEMO_TIMEOUT))
team_phase=""
while ((SECONDS < deadline)); do
  # Agents for pods that run.
  while read -r pod uid sa member phase; do
    [[ -z $pod || $phase != Running || -n ${started[$pod]:-} ]] && continue
    started[$pod]=1
    log "pod $pod runs: starting agent $member as a local process with the pod's token"
    run_agent "$pod" "$uid" "${sa:-default}" "$member"
  done < <(kubectl -n "$NS" get pods -l agentteams.dev/team="$TEAM" -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.uid} {.spec.serviceAccountName} {.metadata.labels.agentteams\.dev/member} {.status.phase}{"\n"}{end}')

  # Progress: member phase changes and agent exits.
  while read -r name phase code reason; do
    [[ -z $name ]] && continue
    if [[ ${phase_seen[$name]:-} != "$phase" ]]; then
      phase_seen[$name]=$phase
      detail=""
      [[ $code != "<none>" ]] && detail=" (exit $code${reason:+, $reason})"
      log "member $name: $phase$detail"
    fi
  done < <(kubectl -n "$NS" get members -o custom-columns='N:.status.name,P:.status.phase,E:.status.exitCode,R:.status.reason' --no-headers 2>/dev/null | sed 's/<none>$//')
  for f in "$DEMO_DIR"/*.exit; do
    [[ -e $f ]] || continue
    m=$(basename "$f" .exit)
    [[ -n ${exit_seen[$m]:-} ]] && continue
    exit_seen[$m]=1
    log "agent $m exited with $(cat "$f") (log: $DEMO_DIR/logs/agent-$m.log)"
  done

  if ((!snapshot_shown)) && [[ ${phase_seen[performance]:-} == Failed ]]; then
    snapshot_shown=1
    say "the team at work (teamctl watch --once -n $NS)"
    teamctl watch --once -n "$NS" --team "$TEAM" || true
  fi

  team_phase=$(kubectl -n "$NS" get team "$TEAM" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [[ $team_phase == Disbanded ]] && break
  sleep 1
done

say "teamctl watch --once -n $NS"
teamctl watch --once -n "$NS"

# The verdict.
members_json=$(kubectl -n "$NS" get members -o json)
summary=$(jq -r '[.items[] | select(.spec.role != "Lead") | .status.phase] | group_by(.) | map("\(length) \(.[0])") | join(",")' <<<"$members_json")
lead=$(jq -r '[.items[] | select(.spec.role == "Lead") | .status.phase] | join(",")' <<<"$members_json")
failed=$(jq -r '[.items[] | select(.status.phase == "Failed") | "\(.status.name) exit \(.status.exitCode) \(.status.reason)"] | join(", ")' <<<"$members_json")
if [[ $team_phase == Disbanded && $summary == "4 Completed,1 Failed" && $lead == Completed ]]; then
  say "demo done: team $TEAM Disbanded; lead Completed; specialists: 4 Completed, 1 Failed ($failed)"
  exit 0
fi
say "demo FAILED: team phase '${team_phase:-none}', lead '${lead:-none}', specialists '${summary:-none}' (logs: $DEMO_DIR/logs/)"
exit 1
