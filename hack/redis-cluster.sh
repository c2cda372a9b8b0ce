# shellcheck shell=bash disable=SC2034 # sourced by stack.sh, which uses its variables
# A Redis Cluster of three primaries on loopback, beside the stack's single redis-server: the
# bus's path past one Redis (hack/test.sh runs the Redis suites on it a second time). Sourced by
# hack/stack.sh, never run.
#
#   hack/stack.sh redis-cluster up|down|status|env   the cluster alone (the rest of the stack as is)
#   REDIS_CLUSTER=1 hack/stack.sh up|status|env      the stack with the cluster
#   hack/stack.sh down                               also stops the cluster's recorded processes
#
# The nodes keep nothing on disk but their nodes.conf (no RDB, no AOF) in
# $STACK_DIR/redis-cluster/<port>, wiped when they stop; a cluster missing a node is not mended
# but made again (it holds only test data). Each node's cluster bus listens on its port + 10000.

REDIS_CLUSTER=${REDIS_CLUSTER:-0}
read -r -a REDIS_CLUSTER_PORTS <<<"${REDIS_CLUSTER_PORTS:-17000 17001 17002}"
REDIS_CLUSTER_DIR=$STACK_DIR/redis-cluster

# Component names, as in $PIDS and $LOGS: redis-cluster-<port>.
redis_cluster_nodes() { printf 'redis-cluster-%s\n' "${REDIS_CLUSTER_PORTS[@]}"; }

# The seed list clients take (TEAM_OPERATOR_REDIS_URL in cluster mode): every node, comma-separated.
redis_cluster_url() {
  local p urls=()
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do urls+=("redis://127.0.0.1:$p"); done
  (IFS=,; echo "${urls[*]}")
}

# Ready for clients: every node has all slots served and knows every other node.
redis_cluster_healthy() {
  local p info
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do
    info=$(redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null) || return 1
    [[ $info == *cluster_state:ok* && $info == *cluster_slots_ok:16384* &&
      $info == *"cluster_known_nodes:${#REDIS_CLUSTER_PORTS[@]}"* ]] || return 1
  done
}

redis_cluster_start_node() { # <port>
  local port=$1 name=redis-cluster-$1
  rm -rf "${REDIS_CLUSTER_DIR:?}/$port"; mkdir -p "$REDIS_CLUSTER_DIR/$port"
  rm -f "$PIDS/$name.pid"
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --protected-mode yes \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
    --dir "$REDIS_CLUSTER_DIR/$port" --daemonize yes --pidfile "$PIDS/$name.pid" \
    --logfile "$LOGS/$name.log"
  local deadline=$((SECONDS + 10))
  until [[ -s $PIDS/$name.pid ]]; do
    ((SECONDS < deadline)) || { tail -n 30 "$LOGS/$name.log" >&2; die "$name wrote no pidfile"; }
    sleep 0.1
  done
}

redis_cluster_up() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
    die "redis-server/redis-cli not found — apt-get install redis-server"
  mkdir -p "$STACK_DIR" "$LOGS" "$PIDS"
  local n all_alive=1
  for n in $(redis_cluster_nodes); do alive "$n" || all_alive=0; done
  if ((all_alive)) && redis_cluster_healthy; then
    log "redis cluster already up and healthy: $(redis_cluster_url)"
    return
  fi
  redis_cluster_down
  local p addrs=()
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do
    port_free "redis-cluster-$p"
    log "starting redis-cluster-$p"
    redis_cluster_start_node "$p"
    addrs+=("127.0.0.1:$p")
  done
  for n in $(redis_cluster_nodes); do wait_healthy "$n"; done
  log "creating the cluster (${#addrs[@]} primaries, no replicas)"
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$LOGS/redis-cluster-create.log" 2>&1 ||
    { tail -n 30 "$LOGS/redis-cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
  local deadline=$((SECONDS + STACK_TIMEOUT))
  until redis_cluster_healthy; do
    ((SECONDS < deadline)) || { redis-cli -p "${REDIS_CLUSTER_PORTS[0]}" cluster info >&2; die "redis cluster not ok after ${STACK_TIMEOUT}s"; }
    sleep 0.2
  done
  log "redis cluster up: $(redis_cluster_url)"
}

# Stops the nodes this script recorded (only those: see stop_one) and wipes their directories.
redis_cluster_down() {
  local n
  for n in $(redis_cluster_nodes); do stop_one "$n"; done
  rm -rf "$REDIS_CLUSTER_DIR"
}

# One line per recorded node, one for the cluster; exit 1 unless the cluster is ready.
redis_cluster_status() {
  local n rc=0
  for n in $(redis_cluster_nodes); do
    if alive "$n" && healthy "$n"; then
      printf '%-24s healthy (pid %s)\n' "$n" "$(pid_of "$n")"
    elif alive "$n"; then
      printf '%-24s running, NOT healthy (pid %s, log %s)\n' "$n" "$(pid_of "$n")" "$LOGS/$n.log"; rc=1
    elif [[ -n $(pid_of "$n") ]]; then
      printf '%-24s down (pid %s recorded)\n' "$n" "$(pid_of "$n")"; rc=1
    fi
  done
  if redis_cluster_healthy; then
    printf '%-24s ok (%s)\n' redis-cluster "$(redis_cluster_url)"
  else
    printf '%-24s down\n' redis-cluster; rc=1
  fi
  return $rc
}

redis_cluster_env() {
  echo "export TEAM_OPERATOR_REDIS_CLUSTER=true"
  echo "export TEAM_OPERATOR_REDIS_URL=$(redis_cluster_url)"
}

redis_cluster_command() { # up|down|status|env
  case ${1:-} in
    up) redis_cluster_up ;;
    down) redis_cluster_down; log "redis cluster down" ;;
    status) redis_cluster_status ;;
    env) redis_cluster_env ;;
    *) echo "usage: $0 redis-cluster up|down|status|env" >&2; exit 2 ;;
  esac
}

# Its part of `hack/stack.sh status`: shown when asked for (REDIS_CLUSTER=1) or once started,
# and failing the status only when asked for (the rest of the stack does not need it).
redis_cluster_in_status() {
  if ((REDIS_CLUSTER)); then redis_cluster_status; return; fi
  local n
  for n in $(redis_cluster_nodes); do
    if [[ -n $(pid_of "$n") ]]; then redis_cluster_status || true; return 0; fi
  done
}
