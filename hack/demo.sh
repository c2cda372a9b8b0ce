#!/usr/bin/env bash
# `make demo`: a spec-review team at work in real containers on the local stack, in one command.
#
#   hack/demo.sh        set up the machine, build, bring up the stack (with its real node), write
#                       and import the images, install the Helm chart (controller ×2 with leader
#                       election, gateway ×2, bundled Redis on a local volume: all pods on the
#                       real node), apply examples/spec-review.yaml in namespace `demo`, follow
#                       the team, print `teamctl watch --once -n demo`; exit 0 only at a Disbanded
#                       team whose lead completed, four specialists completed and `performance`
#                       was OOM-killed by the kernel (exit 137, reason OOMKilled)
#   hack/demo.sh down   uninstall the demo's release and delete namespace demo (not the stack)
#
# Every member is a pod the kubelet runs with containerd and runc: its init container copies
# /teamctl from the project image, its agent (examples/agents/spec-review-agent.sh in the agent
# image) calls the gateway's Service by name with the pod's projected token, its exit code is the
# container's. Nothing runs as a local process but the stack itself; the final `teamctl watch`
# reaches the gateway through the API server (the chart's APIService) with the admin kubeconfig's
# client certificate, as any kubectl user would.
#
# Env: DEMO_TIMEOUT (300 s for the team to disband), DEMO_RELEASE (team-operator),
# DEMO_RELEASE_NAMESPACE (team-operator).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NS=demo
TEAM=spec-review
RELEASE=${DEMO_RELEASE:-team-operator}
RELEASE_NS=${DEMO_RELEASE_NAMESPACE:-team-operator}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-300}
DEMO_DIR=$STACK_DIR/demo
TARGET=$CARGO_OUT/debug

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
[[ -t 2 ]] || say() { printf '==> %s\n' "$*" >&2; }

if [[ ${1:-} == down ]]; then
  eval "$("$HACK_DIR/stack.sh" env)"
  # Teams first, while the operator runs: their finalizer disbands them; uninstalled first, it
  # would be left on them and hold the namespace in Terminating.
  if kubectl get namespace "$NS" >/dev/null 2>&1; then
    kubectl -n "$NS" delete teams --all --wait --timeout 120s >/dev/null
  fi
  helm uninstall "$RELEASE" -n "$RELEASE_NS" --wait --timeout 120s >/dev/null 2>&1 || true
  kubectl delete namespace "$NS" --wait --timeout 120s --ignore-not-found >/dev/null
  log "uninstalled release $RELEASE and deleted namespace $NS (the stack keeps running; make stack-down stops it)"
  exit 0
fi

((NODE)) || die "the demo runs real containers: it needs the stack's real node (NODE=1, the default)"

say "machine set-up (apt, pip, npm; fast when done before)"
"$HACK_DIR/setup.sh"

say "building team-operator and teamctl (debug, static)"
(cd "$REPO_DIR" && cargo build --bins)

say "control-plane and node binaries (built once per machine; the first build takes long)"
"$HACK_DIR/build-binaries.sh"
say "local stack with its real node"
"$HACK_DIR/stack.sh" up
eval "$("$HACK_DIR/stack.sh" env)"
export PATH=$TARGET:$PATH

say "images (pause, agent, redis, project) into the node's containerd"
"$HACK_DIR/images.sh"

mkdir -p "$DEMO_DIR"

say "CRDs (applied before the chart: helm installs CRDs only on first install, never upgrades them)"
kubectl apply --server-side --force-conflicts -f "$REPO_DIR/crds/" >/dev/null
kubectl wait --for condition=Established --timeout 60s crd/teams.agentteams.dev crd/members.agentteams.dev crd/teamtasks.agentteams.dev >/dev/null
kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS" >/dev/null

say "helm upgrade --install $RELEASE charts/team-operator -n $RELEASE_NS -f hack/demo-values.yaml"
if ! helm upgrade --install "$RELEASE" "$REPO_DIR/charts/team-operator" -n "$RELEASE_NS" --create-namespace \
  -f "$HACK_DIR/demo-values.yaml" --wait --timeout 300s >"$DEMO_DIR/helm.log" 2>&1; then
  cat "$DEMO_DIR/helm.log" >&2
  kubectl -n "$RELEASE_NS" get pods -o wide >&2 || true
  kubectl -n "$RELEASE_NS" get events --sort-by=.lastTimestamp | tail -n 20 >&2 || true
  die "the chart's pods did not become ready"
fi
# A new project image under the same tag: restart so the pods run it (pullPolicy Never).
kubectl -n "$RELEASE_NS" rollout restart deployment "$RELEASE-controller" "$RELEASE-gateway" >/dev/null
kubectl -n "$RELEASE_NS" rollout status deployment "$RELEASE-controller" "$RELEASE-gateway" --timeout 180s >/dev/null
kubectl -n "$RELEASE_NS" get pods -o wide
# The gateway's aggregated API (what teamctl reaches through the API server) answers.
kubectl wait --for condition=Available --timeout 120s apiservice/v1alpha1.gateway.agentteams.dev >/dev/null
say "helm test $RELEASE: a pod asks the gateway, through its Service and with its own token, for this namespace's teams"
helm test "$RELEASE" -n "$RELEASE_NS" --timeout 120s | sed -n '/^TEST SUITE/,/^Phase/p' | tail -n 4
leader=$(kubectl -n "$RELEASE_NS" get lease "$RELEASE-controller" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
log "controller leader (Lease $RELEASE_NS/$RELEASE-controller): ${leader:-none yet}"

previous=$(kubectl -n "$NS" get teams,members,teamtasks -o name 2>/dev/null || true)
if [[ -n $previous ]]; then
  say "removing the previous demo's team"
  kubectl -n "$NS" delete teams,members,teamtasks --all --wait --timeout 120s >/dev/null
fi

say "applying examples/spec-review.yaml: a lead and five specialists, at most 3 at a time"
kubectl -n "$NS" apply -f "$REPO_DIR/examples/spec-review.yaml" >/dev/null

declare -A phase_seen=()
deadline=$((SECONDS + DEMO_TIMEOUT))
team_phase=""
while ((SECONDS < deadline)); do
  while IFS=$'\t' read -r name phase code reason pod; do
    [[ -z $name || $name == - ]] && continue
    if [[ ${phase_seen[$name]:-} != "$phase" ]]; then
      phase_seen[$name]=$phase
      detail=""
      [[ $code != - ]] && detail=" (exit $code${reason:+, $reason})"
      log "member $name: $phase$detail${pod:+ — pod $pod}"
    fi
  done < <(kubectl -n "$NS" get members -o json 2>/dev/null |
    jq -r '.items[] | [.status.name // "-", .status.phase // "-", (.status.exitCode // "-" | tostring), .status.reason // "", .status.podName // ""] | @tsv')
  team_phase=$(kubectl -n "$NS" get team "$TEAM" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [[ $team_phase == Disbanded ]] && break
  kubectl -n "$NS" wait team "$TEAM" --for=jsonpath='{.status.phase}'=Disbanded --timeout 2s >/dev/null 2>&1 || true
done

say "kubectl -n $NS get members,pods"
kubectl -n "$NS" get members
kubectl -n "$NS" get pods -o wide 2>/dev/null || true
lead_pod=$(kubectl -n "$NS" get members -o json | jq -r '.items[] | select(.spec.role == "Lead") | .status.podName // empty')
if [[ -n $lead_pod ]]; then
  say "kubectl -n $NS logs $lead_pod (the lead's agent, from the node's kubelet)"
  kubectl -n "$NS" logs "$lead_pod" -c agent 2>&1 | tail -n 12 || true
fi

say "teamctl watch --once -n $NS (through the API server: the gateway's APIService, your kubeconfig)"
watched=0
teamctl watch --once -n "$NS" || watched=$?

# The verdict.
members_json=$(kubectl -n "$NS" get members -o json)
summary=$(jq -r '[.items[] | select(.spec.role != "Lead") | .status.phase] | group_by(.) | map("\(length) \(.[0])") | join(",")' <<<"$members_json")
lead=$(jq -r '[.items[] | select(.spec.role == "Lead") | .status.phase] | join(",")' <<<"$members_json")
oom=$(jq -r '[.items[] | select(.status.name == "performance") | "\(.status.phase) \(.status.reason) \(.status.exitCode)"] | join(",")' <<<"$members_json")
if ((watched == 0)) && [[ $team_phase == Disbanded && $summary == "4 Completed,1 Failed" && $lead == Completed && $oom == "Failed OOMKilled 137" ]]; then
  say "demo done: team $TEAM Disbanded; lead Completed; specialists: 4 Completed, performance OOM-killed by the kernel (exit 137)"
  exit 0
fi
say "demo FAILED: team phase '${team_phase:-none}', lead '${lead:-none}', specialists '${summary:-none}', performance '${oom:-none}', teamctl watch exit $watched"
exit 1
