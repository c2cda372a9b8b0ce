#!/bin/sh
# The scripted agents of the spec-review demo (`make demo`): no model, just teamctl, acting by
# role (TEAM_ROLE) and agent type (AGENT), both set by the operator in every member pod.
#
# lead:        puts a "collect" task and one review task per area (depending on it) and a summary
#              task on the board, completes "collect", asks each specialist to take its task, then
#              waits until every specialist has reported (findings, or the operator's
#              [AGENT FAILURE] notice), writes the summary to its memory and exits 0, which
#              disbands the team.
# specialist:  waits for the lead's message, moves its task to in_progress, works a few seconds,
#              completes the task with its findings and sends them to the lead. `performance`
#              instead runs out of memory while its task is open: it allocates DEMO_ALLOC_MB
#              (256) in one buffer, past its container's memory limit, and the kernel OOM-kills
#              it (the kubelet reports OOMKilled, exit 137).
#
# Needs teamctl on PATH, TEAM_GATEWAY_URL and TEAM_TOKEN_FILE (set by the operator; the demo sets
# TEAM_TOKEN_FILE to a token bound to the member's pod). DEMO_WORK_SECONDS scales the work time.
set -eu

PATH="/opt/agentteams/bin:$PATH"
export PATH
log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "${MEMBER:-agent}" "$*" >&2; }
work=${DEMO_WORK_SECONDS:-2}

# teamctl with retries on "gateway unavailable" (3) and on recipients not named yet (2).
retry() {
    n=0
    until out=$(teamctl "$@" 2>&1); do
        n=$((n + 1))
        if [ "$n" -ge 20 ]; then
            log "teamctl $* failed: $out"
            return 1
        fi
        sleep 0.5
    done
    printf '%s\n' "$out"
}

# The "name" of the task object teamctl -o json printed.
task_name() { sed -n 's/^  "name": "\([^"]*\)".*/\1/p' | head -n 1; }

findings() {
    case "$1" in
        security) echo "2 findings: the gateway token audience is not pinned (4.2); no rate limit on /v1/tools" ;;
        api-design) echo "3 findings: phase should also be a condition; plural kind names; list has no pagination" ;;
        docs) echo "1 finding: no example of a Member with pod overrides" ;;
        testing) echo "2 findings: no test for a Redis restart mid-send; the cap test lacks a two-team case" ;;
        *) echo "no findings" ;;
    esac
}

areas="security performance api-design docs testing"

if [ "${TEAM_ROLE:-}" = lead ]; then
    log "planning the review of docs/spec.md"
    collect=$(retry -o json task create "Collect docs/spec.md and split it into review areas" --owner "$MEMBER" | task_name)
    retry task update "$collect" --state in_progress >/dev/null
    deps=""
    for area in $areas; do
        name=$(retry -o json task create "Review $area of docs/spec.md" --owner "$area" --depends-on "$collect" | task_name)
        deps="$deps $area=$name"
    done
    summary=$(retry -o json task create "Write the review summary" --owner "$MEMBER" --depends-on "$collect" | task_name)
    sleep "$work"
    retry task update "$collect" --state completed --result "5 review areas" >/dev/null
    log "board ready; asking each specialist to take its task"
    for pair in $deps; do
        retry send "${pair%%=*}" "Please take task ${pair#*=}: review the ${pair%%=*} part of docs/spec.md and send me your findings." >/dev/null
    done

    got=0
    failed=0
    report=""
    deadline=$(($(date +%s) + ${DEMO_LEAD_DEADLINE:-240}))
    while [ $((got + failed)) -lt 5 ]; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "gave up waiting: $got findings, $failed failures"
            exit 1
        fi
        msgs=$(retry wait --timeout 20)
        printf '%s\n' "$msgs" | while IFS= read -r m; do [ "$m" = "no messages" ] || log "got: $m"; done
        n=$(printf '%s\n' "$msgs" | grep -c ': findings on ' || true)
        f=$(printf '%s\n' "$msgs" | grep -c '\[AGENT FAILURE\]' || true)
        got=$((got + n))
        failed=$((failed + f))
        report="$report$(printf '%s\n' "$msgs" | sed -n 's/^[^ ]* -> [^:]*: findings on /- /p; s/^\[system\] [^ ]* -> [^:]*: \[AGENT FAILURE\] /- FAILED: /p')
"
    done

    retry task update "$summary" --state in_progress >/dev/null
    log "all $((got + failed)) specialists reported ($failed failed); waiting for them to finish"
    while retry -o json get members | grep -Eq '"phase": "(Queued|Starting)"' ||
        [ "$(retry -o json get members | grep -Ec '"phase": "(Active|Idle)"')" -gt 1 ]; do
        sleep 0.5
    done
    text="Review of docs/spec.md ($got areas reviewed, $failed failed):
$report"
    retry memory write "$text" >/dev/null
    retry task update "$summary" --state completed --result "$got areas reviewed, $failed failed; summary in the lead's memory" >/dev/null
    log "summary written to memory; done"
    exit 0
fi

# A specialist: wait for the lead's request.
log "waiting for the lead"
task=""
while [ -z "$task" ]; do
    msgs=$(retry wait --timeout 30)
    task=$(printf '%s\n' "$msgs" | sed -n 's/.*Please take task \([a-z0-9-]*\):.*/\1/p' | head -n 1)
done
log "taking task $task"
retry task update "$task" --state in_progress >/dev/null
sleep "$work"
if [ "${AGENT:-}" = performance ]; then
    log "profiling: loading ${DEMO_ALLOC_MB:-256} MiB of samples into memory"
    # One buffer of that size, filled: resident memory past the container's limit.
    dd if=/dev/zero of=/dev/null bs="${DEMO_ALLOC_MB:-256}M" count=1 2>/dev/null
    log "profiling finished without running out of memory (no memory limit?)"
    exit 1
fi
sleep "$work"
result=$(findings "${AGENT:-}")
retry task update "$task" --state completed --result "$result" >/dev/null
retry send lead "findings on ${AGENT:-}: $result" >/dev/null
log "sent findings to the lead"
exit 0
