#!/bin/sh
# A scripted agent for tests and the demo: no model, just teamctl.
#
# It reads TEAM_PROMPT (set by the operator in every member pod). Each prompt line that starts
# with "> " is a teamctl command, run in order, for example:
#
#   > task create "write the parser" --owner general-2
#   > send general-2 "please take the parser task"
#   > wait --timeout 60
#   > exit 0
#
# "> exit N" ends the agent with exit code N (the member then Completes or Fails). Without any
# "> " line it acts as a simple worker: it waits for one message, marks the tasks it owns
# completed with that message as result, answers the sender "done: <message>", and exits 0.
#
# Needs: teamctl on PATH or in /opt/agentteams/bin (the operator's init container puts it there),
# TEAM_GATEWAY_URL and TEAM_TOKEN_FILE (set by the operator).
set -eu

PATH="/opt/agentteams/bin:$PATH"
export PATH
log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "${MEMBER:-agent}" "$*" >&2; }

script=$(printf '%s\n' "${TEAM_PROMPT:-}" | sed -n 's/^> //p')
if [ -n "$script" ]; then
    printf '%s\n' "$script" | while IFS= read -r line; do
        case "$line" in
            "exit "*) log "exit ${line#exit }"; exit "${line#exit }" ;;
        esac
        log "teamctl $line"
        # The line is shell words (quotes allowed), passed to teamctl as arguments.
        eval "teamctl $line" || { code=$?; log "teamctl failed with exit code $code"; exit "$code"; }
    done
    exit $?
fi

log "waiting for a message"
msg=$(teamctl -o json wait)
from=$(printf '%s' "$msg" | sed -n 's/.*"from": *"\([^"]*\)".*/\1/p' | head -n 1)
body=$(printf '%s' "$msg" | sed -n 's/.*"body": *"\([^"]*\)".*/\1/p' | head -n 1)
if [ -z "$from" ]; then
    log "no message before the timeout"
    exit 0
fi
log "got from $from: $body"
for task in $(teamctl -o json task list --owner "${MEMBER:-}" --state pending | sed -n 's/.*"name": *"\([^"]*\)".*/\1/p'); do
    teamctl task update "$task" --state in_progress >/dev/null
    teamctl task update "$task" --state completed --result "$body" >/dev/null
    log "completed task $task"
done
teamctl send "$from" "done: $body"
