#!/usr/bin/env bash
# The local stack on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kwok (fake nodes and pod lifecycles, see hack/kwok/stages.yaml) and redis-server; with NODE=1
# (default) also a real node: containerd, kubelet, kube-proxy and CoreDNS on a dummy interface and
# a pod bridge this script creates (see hack/node.sh for its addresses, chains and ports).
#
#   hack/stack.sh up       start what is not running, wait until healthy (idempotent)
#   hack/stack.sh down     stop the processes this script recorded, wipe etcd and redis data; for
#                          the node also its pods' containers, mounts, cgroups, bridge, chains
#   hack/stack.sh status   health of each component (exit 1 if any is down)
#   hack/stack.sh env      print `export KUBECONFIG=… TEAM_OPERATOR_REDIS_URL=…` lines
#   hack/stack.sh restart-kcm  restart only kube-controller-manager, with KCM_KUBE_API_QPS /
#                          KCM_KUBE_API_BURST from the environment (the benchmarks use it)
#   hack/stack.sh restart-scheduler  restart only kube-scheduler, with SCHEDULER_KUBE_API_QPS /
#                          SCHEDULER_KUBE_API_BURST from the environment (the benchmarks use it)
#   hack/stack.sh redis-cluster up|down|status|env  a 3-primary Redis Cluster (hack/redis-cluster.sh);
#                          REDIS_CLUSTER=1 adds it to up, status and env
#
# State (certificates, kubeconfig, data, logs, pids) lives in $STACK_DIR (see hack/lib.sh).
# Tunables (env): NODE (1), KWOK_NODES, *_PORT, NODE_* (hack/node.sh), KCM_KUBE_API_QPS / KCM_KUBE_API_BURST (controller-manager
# client rate; defaults are upstream's 20 / 30), SCHEDULER_KUBE_API_QPS / SCHEDULER_KUBE_API_BURST
# (scheduler client rate; upstream's 50 / 100), APISERVER_PROFILING (false; true serves the API
# server's /debug/pprof, for finding where its CPU goes under a benchmark), STACK_TIMEOUT (seconds
# per health wait, 60).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KCM_PORT=${KCM_PORT:-16257}
SCHEDULER_PORT=${SCHEDULER_PORT:-16259}
KWOK_PORT=${KWOK_PORT:-16247}
KCM_KUBE_API_QPS=${KCM_KUBE_API_QPS:-20}
KCM_KUBE_API_BURST=${KCM_KUBE_API_BURST:-30}
APISERVER_PROFILING=${APISERVER_PROFILING:-false}
SCHEDULER_KUBE_API_QPS=${SCHEDULER_KUBE_API_QPS:-50}
SCHEDULER_KUBE_API_BURST=${SCHEDULER_KUBE_API_BURST:-100}
# What the chart's Deployments, StatefulSet (and its PersistentVolumeClaim: binding, and the
# protection finalizers the API server adds), PDB, aggregated ClusterRoles and Services need,
# besides the basics and the Job controller the benchmarks use.
KCM_CONTROLLERS=garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,job-controller,deployment-controller,replicaset-controller,statefulset-controller,endpointslice-controller,disruption-controller,clusterrole-aggregation-controller,persistentvolume-binder-controller,persistentvolume-protection-controller,persistentvolumeclaim-protection-controller
STACK_TIMEOUT=${STACK_TIMEOUT:-60}
SERVICE_CIDR=10.96.0.0/16

PKI=$STACK_DIR/pki
LOGS=$STACK_DIR/logs
PIDS=$STACK_DIR/pids
ETCD_URL=http://127.0.0.1:$ETCD_PORT
APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok redis)
if ((NODE)); then
  source "$HACK_DIR/node.sh"
  COMPONENTS+=("${NODE_COMPONENTS[@]}")
fi
source "$HACK_DIR/redis-cluster.sh"

# --- helpers ---------------------------------------------------------------------------------

pid_of() { [[ -f $PIDS/$1.pid ]] && cat "$PIDS/$1.pid" || true; }

# The recorded process exists (it may still be exec'ing from setsid/env into the binary).
running() { local pid; pid=$(pid_of "$1"); [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }

# Alive and really ours: the recorded pid runs the binary we started (guards against pid reuse).
alive() {
  local pid; pid=$(pid_of "$1")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  local exe; exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  case $1 in
    redis | redis-cluster-*) [[ $exe == *redis-server* || $exe == *redis-check* ]] ;;
    containerd | kubelet | kube-proxy | coredns) [[ $exe == "$(readlink -f "$(node_bin "$1")")" ]] ;;
    *) [[ $exe == "$(readlink -f "$BIN_DIR/$1")" ]] ;;
  esac
}

curl_api() { curl -sf --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"; }

healthy() {
  case $1 in
    etcd) curl -sf --max-time 3 "$ETCD_URL/health" | grep -q '"health":"true"' ;;
    kube-apiserver) [[ $(curl_api "$APISERVER_URL/readyz" 2>/dev/null) == ok ]] ;;
    kube-controller-manager) [[ $(curl -sfk --max-time 3 "https://127.0.0.1:$KCM_PORT/healthz" 2>/dev/null) == ok ]] ;;
    kube-scheduler) [[ $(curl -sfk --max-time 3 "https://127.0.0.1:$SCHEDULER_PORT/healthz" 2>/dev/null) == ok ]] ;;
    kwok) [[ $(curl -sf --max-time 3 "http://127.0.0.1:$KWOK_PORT/healthz" 2>/dev/null) == ok ]] && nodes_ready ;;
    redis) [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] ;;
    redis-cluster-*) [[ $(redis-cli -h 127.0.0.1 -p "${1##*-}" ping 2>/dev/null) == PONG ]] ;;
    *) node_healthy "$1" ;;
  esac
}

kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# Number of kwok nodes whose Ready condition is True equals $KWOK_NODES.
nodes_ready() {
  local n
  n=$(kubectl_admin get nodes -l type=kwok -o \
    jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null |
    grep -c '^True$' || true)
  (( n >= KWOK_NODES ))
}

# Poll a health check with a deadline; on timeout print the component's log tail and fail.
wait_healthy() { # <component>
  local name=$1 deadline=$((SECONDS + STACK_TIMEOUT))
  until healthy "$name"; do
    if ! running "$name"; then
      log "$name exited; last lines of $LOGS/$name.log:"
      tail -n 30 "$LOGS/$name.log" >&2 || true
      die "$name did not start"
    fi
    if (( SECONDS >= deadline )); then
      log "$name not healthy after ${STACK_TIMEOUT}s; last lines of $LOGS/$name.log:"
      tail -n 30 "$LOGS/$name.log" >&2 || true
      die "$name did not become healthy"
    fi
    sleep 0.2
  done
}

# Start a component in its own session with its log in $LOGS and pid in $PIDS. Job control off in
# a subshell: with it on (a shell run with `set -m`), `&` makes the child a process-group leader,
# setsid(1) then forks to get a session, and $! names the parent that exits at once: the pid file
# would not name the component and `down` would leave it running.
spawn() { # <name> <cmd…>
  local name=$1; shift
  : >"$LOGS/$name.log"
  (
    set +m
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$PIDS/$name.pid"
  )
}

port_of() {
  case $1 in
    etcd) echo "$ETCD_PORT $ETCD_PEER_PORT" ;;
    kube-apiserver) echo "$APISERVER_PORT" ;;
    kube-controller-manager) echo "$KCM_PORT" ;;
    kube-scheduler) echo "$SCHEDULER_PORT" ;;
    kwok) echo "$KWOK_PORT" ;;
    redis) echo "$REDIS_PORT" ;;
    redis-cluster-*) echo "${1##*-} $((${1##*-} + 10000))" ;;
    *) node_ports "$1" ;;
  esac
}

# Fail early, and clearly, if another process holds one of the component's ports.
port_free() { # <component>
  local p holder
  for p in $(port_of "$1"); do
    holder=$(ss -Hltnp "sport = :$p" 2>/dev/null || true)
    [[ -z $holder ]] || die "$1: port $p is already in use (${holder//$'\n'/ }); stop that process or override the port (see hack/lib.sh)"
  done
}

require_binaries() {
  local missing=()
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
    [[ -x $BIN_DIR/$b ]] || missing+=("$b")
  done
  ((${#missing[@]} == 0)) || die "missing in $BIN_DIR: ${missing[*]} — run \`make binaries\` (hack/build-binaries.sh)"
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
    die "redis-server/redis-cli not found — apt-get install redis-server"
  command -v openssl >/dev/null || die "openssl not found"
  command -v curl >/dev/null || die "curl not found"
  if ((NODE)); then node_require; fi
}

# --- certificates ----------------------------------------------------------------------------

gen_pki() {
  [[ -f $PKI/done ]] && return
  log "generating CA, serving, admin client and service-account keys in $PKI"
  rm -rf "$PKI"; mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.crt \
      -subj "/CN=team-operator-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    cat >serving.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1${NODE:+${NODE_IP:+,IP:$NODE_IP}},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    cat >client.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
    openssl req -newkey rsa:2048 -nodes -keyout serving.key -out serving.csr -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
      -extfile serving.ext -out serving.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
      -subj "/O=system:masters/CN=team-operator-admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
      -extfile client.ext -out admin.crt 2>/dev/null
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr
    touch done
  )
  write_kubeconfig
}

# The API server's front proxy (API aggregation): its own CA, as kubeadm does, so no cluster
# client certificate can pass for it; the API server proxies aggregated APIs (the gateway's
# APIService) with this client certificate and the caller's identity in X-Remote-* headers, and
# publishes the CA, the allowed name and the header names in kube-system's
# extension-apiserver-authentication ConfigMap. Created once, beside a PKI from before it too.
front_proxy_pki() {
  [[ -f $PKI/front-proxy-client.crt ]] && return
  log "generating the front-proxy CA and client certificate in $PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout front-proxy-ca.key -out front-proxy-ca.crt \
      -subj "/CN=team-operator-front-proxy-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr \
      -subj "/CN=front-proxy-client" 2>/dev/null
    openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key -CAcreateserial \
      -days 3650 -sha256 -extfile client.ext -out front-proxy-client.crt 2>/dev/null
    rm -f front-proxy-client.csr
  )
}

# A serving certificate from before the node (or for another NODE_IP) lacks the node's address:
# sign a new one with the same CA, so clients that trust the CA keep working.
serving_cert_covers_node() {
  ((NODE)) || return 0
  [[ -f $PKI/serving.crt ]] || return 1
  openssl x509 -in "$PKI/serving.crt" -noout -ext subjectAltName 2>/dev/null | grep -q "IP Address:$NODE_IP\b"
}

renew_serving_cert() {
  log "signing a new API server certificate with IP SANs 127.0.0.1, 10.96.0.1 and $NODE_IP"
  (
    cd "$PKI"
    sed -i "s/^subjectAltName=.*/subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local/" serving.ext
    openssl req -newkey rsa:2048 -nodes -keyout serving.key -out serving.csr -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
      -extfile serving.ext -out serving.crt 2>/dev/null
    rm -f serving.csr
  )
}

write_kubeconfig() {
  local b64='base64 -w0'
  cat >"$KUBECONFIG_PATH" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: team-operator-local
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $($b64 <"$PKI/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $($b64 <"$PKI/admin.crt")
    client-key-data: $($b64 <"$PKI/admin.key")
contexts:
- name: team-operator-local
  context:
    cluster: team-operator-local
    user: admin
    namespace: default
current-context: team-operator-local
EOF
  chmod 600 "$KUBECONFIG_PATH"
}

# --- components ------------------------------------------------------------------------------

start_etcd() {
  spawn etcd "$BIN_DIR/etcd" --name local --data-dir "$STACK_DIR/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync=true --quota-backend-bytes=8589934592 --log-level=warn
}

# TaintNodesByCondition is off: it taints new Nodes node.kubernetes.io/not-ready and only the
# node-lifecycle-controller (not run here) would lift it, so nothing would ever schedule.
# With the node, the API server listens on all addresses (127.0.0.1 for the host's kubeconfig,
# NODE_IP for pods through the `kubernetes` Service; the stack's INPUT chain admits only loopback
# and the pod bridge to its port) and advertises NODE_IP, which its lease reconciler writes into
# the `kubernetes` Service's endpoints. Without it: loopback only, no endpoints.
apiserver_node_flags() {
  if ((NODE)); then
    echo --bind-address=0.0.0.0 --advertise-address="$NODE_IP" --endpoint-reconciler-type=lease \
      --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
      --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
      --kubelet-certificate-authority="$PKI/ca.crt" \
      --kubelet-preferred-address-types=InternalIP
  else
    echo --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none
  fi
}

start_kube-apiserver() {
  # shellcheck disable=SC2046 # word splitting of the flag list is intended (paths have no spaces)
  spawn kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers="$ETCD_URL" \
    $(apiserver_node_flags) --secure-port="$APISERVER_PORT" \
    --cert-dir="$PKI" --tls-cert-file="$PKI/serving.crt" --tls-private-key-file="$PKI/serving.key" \
    --client-ca-file="$PKI/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-uid-headers=X-Remote-Uid \
    --requestheader-group-headers=X-Remote-Group --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --enable-aggregator-routing=true \
    --allow-privileged=true \
    --disable-admission-plugins=TaintNodesByCondition \
    --profiling="$APISERVER_PROFILING" \
    --v=1
}

start_kube-controller-manager() {
  spawn kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig="$KUBECONFIG_PATH" \
    --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$STACK_DIR/kcm-certs" \
    --controllers="$KCM_CONTROLLERS" \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --leader-elect=false \
    --kube-api-qps="$KCM_KUBE_API_QPS" --kube-api-burst="$KCM_KUBE_API_BURST" \
    --v=1
}

start_kube-scheduler() {
  spawn kube-scheduler "$BIN_DIR/kube-scheduler" \
    --kubeconfig="$KUBECONFIG_PATH" \
    --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --cert-dir="$STACK_DIR/scheduler-certs" \
    --leader-elect=false \
    --kube-api-qps="$SCHEDULER_KUBE_API_QPS" --kube-api-burst="$SCHEDULER_KUBE_API_BURST" \
    --v=1
}

start_kwok() {
  # kwok reads $KWOK_WORKDIR/kwok.yaml (default ~/.kwok/kwok.yaml) before --config: point both
  # the work dir and HOME into the stack dir so a user's file cannot change our stages.
  mkdir -p "$STACK_DIR/kwok"
  rm -f "$STACK_DIR/kwok/kwok.yaml"
  spawn kwok env HOME="$STACK_DIR/kwok" KWOK_WORKDIR="$STACK_DIR/kwok" "$BIN_DIR/kwok" \
    --kubeconfig="$KUBECONFIG_PATH" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --server-address="127.0.0.1:$KWOK_PORT" \
    --config="$HACK_DIR/kwok/stages.yaml"
  # `env` execs kwok, so the recorded pid is kwok's own.
  create_nodes
}

create_nodes() {
  local i manifest=""
  for ((i = 0; i < KWOK_NODES; i++)); do
    manifest+="---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: \"\"
status:
  allocatable: {cpu: \"64\", memory: 256Gi, pods: \"1000\"}
  capacity: {cpu: \"64\", memory: 256Gi, pods: \"1000\"}
"
  done
  kubectl_admin apply -f - <<<"$manifest" >/dev/null
}

start_redis() {
  mkdir -p "$STACK_DIR/redis"
  rm -f "$PIDS/redis.pid"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --dir "$STACK_DIR/redis" --daemonize yes --pidfile "$PIDS/redis.pid" \
    --logfile "$LOGS/redis.log" --protected-mode yes
  local deadline=$((SECONDS + 10))
  until [[ -s $PIDS/redis.pid ]]; do
    (( SECONDS < deadline )) || { tail -n 30 "$LOGS/redis.log" >&2; die "redis-server wrote no pidfile"; }
    sleep 0.1
  done
}

# The admin kubeconfig's identity is needed by etcd-independent components only after the
# API server is up, so start strictly in order, each after the previous one is healthy.
up() {
  require_binaries
  mkdir -p "$STACK_DIR" "$LOGS" "$PIDS"
  local started=0 t0=$SECONDS
  if ((NODE)); then
    mkdir -p "$NODE_DIR"
    node_net_up
    gen_pki
    if ! serving_cert_covers_node; then
      renew_serving_cert
      if alive kube-apiserver; then stop_one kube-apiserver; fi
    fi
    node_pki
    # Idempotent (unchanged files are not touched); a component whose config changed is
    # restarted below.
    write_node_config
  fi
  for c in "${COMPONENTS[@]}"; do
    if alive "$c" && stale "$c"; then
      log "$c runs with other flags or config than this hack/stack.sh writes; restarting it"
      stop_one "$c"
    fi
    if alive "$c" && healthy "$c"; then continue; fi
    if ! alive "$c" && healthy "$c"; then
      # e.g. a redis-server someone else started on our port: use it, never stop it.
      log "$c: a healthy instance not started by this script answers on its port; using it (down leaves it alone)"
      continue
    fi
    if (( ! started )); then gen_pki; front_proxy_pki; [[ -f $KUBECONFIG_PATH ]] || write_kubeconfig; fi
    started=1
    if alive "$c"; then
      log "$c is running but not healthy yet; waiting"
    else
      port_free "$c"
      log "starting $c"
      "start_$c"
    fi
    wait_healthy "$c"
    log "$c healthy"
  done
  if ((NODE)); then
    node_volumes
    node_net_first
    # Imported images may have been removed (disk pressure before they were pinned, a wiped
    # content store): import what is missing (cheap when they are there).
    "$HACK_DIR/images.sh" pause agent agent-root redis >>"$LOGS/images.log" 2>&1 ||
      { tail -n 20 "$LOGS/images.log" >&2; die "importing the base images failed (see $LOGS/images.log)"; }
  fi
  if (( started )); then
    log "stack up in $((SECONDS - t0))s — kubeconfig: $KUBECONFIG_PATH, redis: $REDIS_URL"
  else
    log "stack already up and healthy — kubeconfig: $KUBECONFIG_PATH, redis: $REDIS_URL"
  fi
  if ((REDIS_CLUSTER)); then redis_cluster_up; fi
}

# A running component started by an older version of this script with flags that matter now.
stale() { # <component>
  local pid cmd; pid=$(pid_of "$1")
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  case $1 in
    kube-apiserver)
      # Aggregated APIs (the gateway's APIService) need the front-proxy flags.
      [[ $cmd == *"--enable-aggregator-routing=true "* ]] || return 0
      if ((NODE)); then [[ $cmd != *"--advertise-address=$NODE_IP "* ]]; else [[ $cmd == *"--bind-address=0.0.0.0 "* ]]; fi ;;
    kube-controller-manager) [[ $cmd != *"--controllers=$KCM_CONTROLLERS "* ]] ;;
    containerd | kubelet | coredns) node_stale "$1" ;;
    *) return 1 ;;
  esac
}

# Process state letter (R, S, Z…), empty once the process is gone. A zombie counts as exited.
proc_state() { awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true; }

stop_one() { # <component>
  local name=$1 pid
  pid=$(pid_of "$name")
  [[ -n $pid ]] || return 0
  if alive "$name"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15)) killed=0 gone
    while gone=$(proc_state "$pid"); [[ -n $gone && $gone != Z ]]; do
      if (( SECONDS >= deadline )); then
        (( killed )) && die "$name (pid $pid) survives SIGKILL"
        log "$name did not exit on TERM within 15s; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        killed=1; deadline=$((SECONDS + 5))
      fi
      sleep 0.1
    done
    # A Go process's main thread shows Z while its other threads still close their sockets: wait
    # for the ports too, so a restart can bind them.
    local until=$((SECONDS + 10)) p
    for p in $(port_of "$name"); do
      while [[ -n $(ss -Hltn "sport = :$p" 2>/dev/null) ]] && ((SECONDS < until)); do sleep 0.1; done
    done
  fi
  rm -f "$PIDS/$name.pid"
}

down() {
  local i
  redis_cluster_down
  if ((NODE)); then
    # Nothing may re-create or re-schedule the node's pods while they are deleted.
    stop_one kube-controller-manager
    stop_one kube-scheduler
    node_drain
    node_down
  fi
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_one "${COMPONENTS[i]}"
  done
  # Fresh cluster state next time; certificates and the kubeconfig are kept.
  rm -rf "$STACK_DIR/etcd" "$STACK_DIR/redis"
  log "stack down"
}

status() {
  local rc=0
  for c in "${COMPONENTS[@]}"; do
    if alive "$c" && healthy "$c"; then
      printf '%-24s healthy (pid %s)\n' "$c" "$(pid_of "$c")"
    elif healthy "$c"; then
      printf '%-24s healthy (not started by this script)\n' "$c"
    elif alive "$c"; then
      printf '%-24s running, NOT healthy (pid %s, log %s)\n' "$c" "$(pid_of "$c")" "$LOGS/$c.log"; rc=1
    else
      printf '%-24s down\n' "$c"; rc=1
    fi
  done
  if ((NODE)); then node_net_status || rc=1; fi
  redis_cluster_in_status || rc=1
  return $rc
}

env_lines() {
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
  if ((REDIS_CLUSTER)); then
    redis_cluster_env
  else
    echo "export TEAM_OPERATOR_REDIS_CLUSTER=false"
    echo "export TEAM_OPERATOR_REDIS_URL=$REDIS_URL"
  fi
  # The built kubectl and helm first: the preinstalled kubectl is outside 1.36's version skew.
  echo "export PATH=$BIN_DIR:\$PATH"
}

# Restarts one control-plane component alone (e.g. with other client rate limits, given as
# "qps burst"); the rest of the stack and its data stay.
restart_alone() {
  local name=$1 limits=$2
  require_binaries
  stop_one "$name"
  port_free "$name"
  log "starting $name (kube-api-qps/burst $limits)"
  "start_$name"
  wait_healthy "$name"
  log "$name healthy"
}

case ${1:-} in
  up) up ;;
  restart-kcm) restart_alone kube-controller-manager "$KCM_KUBE_API_QPS $KCM_KUBE_API_BURST" ;;
  restart-scheduler) restart_alone kube-scheduler "$SCHEDULER_KUBE_API_QPS $SCHEDULER_KUBE_API_BURST" ;;
  down) down ;;
  status) status ;;
  env) env_lines ;;
  redis-cluster) redis_cluster_command "${2:-}" ;;
  *) echo "usage: $0 up|down|status|env|restart-kcm|restart-scheduler|redis-cluster" >&2; exit 2 ;;
esac
