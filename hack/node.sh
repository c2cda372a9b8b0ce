# shellcheck shell=bash disable=SC2034 # sourced by stack.sh and images.sh, which use its variables
# The real node of the local stack (NODE=1): containerd + runc + CNI bridge + kubelet, kube-proxy
# (iptables mode) and CoreDNS, beside the kwok nodes. Sourced by hack/stack.sh, never run.
#
# Addresses (all created by this file on this machine, removed by `stack.sh down`):
#   NODE_IP (10.244.0.1/32) on the portless bridge NODE_LINK (to-node0): the node's InternalIP,
#     where the kubelet serves (KUBELET_PORT), CoreDNS answers (port 53, the pods' nameserver)
#     and the API server advertises itself (the `kubernetes` Service's endpoint).
#   NODE_POD_CIDR (10.244.7.0/24) on the bridge NODE_BRIDGE (to-br0), gateway .1: pod IPs.
#   A blackhole route for KWOK_POD_CIDR (10.0.0.0/16, kwok's fake pod IPs), so a Service that
#     selects kwok pods can never become a route out of the machine.
# iptables: the chains ${NODE_CHAIN}-INPUT (only loopback and the pod bridge reach the API server's
# port; it listens on 0.0.0.0 to serve both 127.0.0.1 and NODE_IP) and ${NODE_CHAIN}-FORWARD
# (pods reach only pods on the bridge and the node's own addresses; nothing is forwarded anywhere
# else), plus kube-proxy's own KUBE-* chains (removed with `kube-proxy --cleanup`).
# The node is single-instance per machine: a second stack runs with NODE=0, or overrides every
# NODE_* name, address and port below.

NODE_NAME=${NODE_NAME:-team-operator-node}
NODE_IP=${NODE_IP:-10.244.0.1}
NODE_LINK=${NODE_LINK:-to-node0}
NODE_BRIDGE=${NODE_BRIDGE:-to-br0}
NODE_POD_CIDR=${NODE_POD_CIDR:-10.244.7.0/24}
NODE_POD_GATEWAY=${NODE_POD_GATEWAY:-${NODE_POD_CIDR%.*}.1}
NODE_CHAIN=${NODE_CHAIN:-TEAM-OPERATOR}
KWOK_POD_CIDR=${KWOK_POD_CIDR:-10.0.0.0/16} # keep equal to hack/kwok/stages.yaml's cidr
KUBELET_PORT=${KUBELET_PORT:-10350}
KUBELET_HEALTHZ_PORT=${KUBELET_HEALTHZ_PORT:-10348}
KUBE_PROXY_HEALTHZ_PORT=${KUBE_PROXY_HEALTHZ_PORT:-10356}
KUBE_PROXY_METRICS_PORT=${KUBE_PROXY_METRICS_PORT:-10349}
COREDNS_READY_PORT=${COREDNS_READY_PORT:-10381}
COREDNS_HEALTH_PORT=${COREDNS_HEALTH_PORT:-10380}
# The real node carries this taint, so the kwok-era tests and benchmarks keep landing on kwok
# nodes; what should run for real tolerates it (and selects the label).
NODE_TAINT_KEY=team-operator.local/real-node
NODE_LABEL=team-operator.local/real-node=true
PAUSE_IMAGE=localhost/team-operator/pause:3.10

NODE_DIR=$STACK_DIR/node
NODE_RUN=$NODE_DIR/run      # wiped by down: kubelet dir, containerd state, CNI IPAM, PVs
NODE_KEEP=$NODE_DIR/keep    # kept: containerd's content store and snapshots (imported images)
CTRD_SOCK=$NODE_DIR/containerd.sock
NODE_OWNER_DIR=/run/team-operator
NODE_COMPONENTS=(containerd kubelet kube-proxy coredns)

node_bin() { # <component> -> the binary the recorded pid must run
  case $1 in
    kubelet | kube-proxy) echo "$BIN_DIR/$1" ;;
    containerd | coredns) echo "$NODE_BIN_DIR/$1" ;;
  esac
}

node_ports() {
  case $1 in
    containerd) ;;
    kubelet) echo "$KUBELET_PORT $KUBELET_HEALTHZ_PORT" ;;
    kube-proxy) echo "$KUBE_PROXY_HEALTHZ_PORT $KUBE_PROXY_METRICS_PORT" ;;
    coredns) echo "$COREDNS_READY_PORT $COREDNS_HEALTH_PORT" ;;
  esac
}

# ctr against the node's containerd, without its per-call cgroup v1 deprecation warning.
ctr_node() {
  "$NODE_BIN_DIR/ctr" --address "$CTRD_SOCK" -n k8s.io "$@" 2> >(grep -v 'support for cgroup v1 is deprecated' >&2)
}

node_healthy() {
  case $1 in
    containerd) ctr_node version >/dev/null 2>&1 ;;
    kubelet)
      [[ $(curl -sf --max-time 3 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" 2>/dev/null) == ok ]] &&
        [[ $(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]] ;;
    kube-proxy) curl -sf --max-time 3 "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz" >/dev/null 2>&1 ;;
    coredns) [[ $(curl -sf --max-time 3 "http://127.0.0.1:$COREDNS_READY_PORT/ready" 2>/dev/null) == OK ]] ;;
  esac
}

node_require() {
  [[ $(id -u) == 0 ]] || die "the real node needs root (interfaces, iptables, mounts); run with NODE=0 for kwok only"
  local missing=() b
  for b in kubelet kube-proxy; do [[ -x $BIN_DIR/$b ]] || missing+=("$BIN_DIR/$b"); done
  for b in containerd ctr containerd-shim-runc-v2 runc coredns cni/bridge cni/host-local cni/loopback cni/portmap; do
    [[ -x $NODE_BIN_DIR/$b ]] || missing+=("$NODE_BIN_DIR/$b")
  done
  ((${#missing[@]} == 0)) || die "missing: ${missing[*]} — run \`make binaries\` (hack/build-binaries.sh)"
  for b in iptables ip jq mount umount; do
    command -v "$b" >/dev/null || die "$b not found — run hack/setup.sh"
  done
}

# --- network: dummy interface, bridge, blackhole route, iptables chains ------------------------

# The node's interfaces and chains belong to one stack at a time.
node_claim() {
  mkdir -p "$NODE_OWNER_DIR"
  local owner_file=$NODE_OWNER_DIR/node-$NODE_LINK.owner owner=""
  [[ -f $owner_file ]] && owner=$(cat "$owner_file")
  if [[ -n $owner && $owner != "$STACK_DIR" ]] && ip link show "$NODE_LINK" >/dev/null 2>&1; then
    die "the real node ($NODE_LINK, $NODE_IP) belongs to the stack in $owner; stop that one or start this one with NODE=0"
  fi
  echo "$STACK_DIR" >"$owner_file"
}

ipt_chain() { # <table> <chain> <parent> : create (flush) our chain, jump to it first from parent
  local table=$1 chain=$2 parent=$3
  iptables -w 5 -t "$table" -N "$chain" 2>/dev/null || iptables -w 5 -t "$table" -F "$chain"
  iptables -w 5 -t "$table" -C "$parent" -j "$chain" 2>/dev/null || iptables -w 5 -t "$table" -I "$parent" 1 -j "$chain"
}

ipt_chain_rm() { # <table> <chain> <parent>
  local table=$1 chain=$2 parent=$3 i
  for ((i = 0; i < 10; i++)); do
    iptables -w 5 -t "$table" -D "$parent" -j "$chain" 2>/dev/null || break
  done
  iptables -w 5 -t "$table" -F "$chain" 2>/dev/null || true
  iptables -w 5 -t "$table" -X "$chain" 2>/dev/null || true
}

node_net_up() {
  node_claim
  if ! ip link show "$NODE_LINK" >/dev/null 2>&1; then
    log "node network: $NODE_LINK ($NODE_IP), bridge $NODE_BRIDGE ($NODE_POD_GATEWAY), blackhole $KWOK_POD_CIDR"
    # A bridge without ports stands in for a dummy interface (this kernel has no dummy driver).
    ip link add "$NODE_LINK" type bridge
  fi
  ip addr replace "$NODE_IP/32" dev "$NODE_LINK"
  ip link set "$NODE_LINK" up
  # The CNI bridge plugin reuses this bridge; creating it here gives CoreDNS, kube-proxy and the
  # firewall rules an interface before the first pod.
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge
  ip addr replace "$NODE_POD_GATEWAY/${NODE_POD_CIDR#*/}" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  ip route replace blackhole "$KWOK_POD_CIDR"

  # Routing between the bridge and the node's addresses (Services are DNAT'd on the way).
  # The previous value is restored by down.
  [[ -f $NODE_DIR/ip_forward.orig ]] || sysctl -n net.ipv4.ip_forward >"$NODE_DIR/ip_forward.orig"
  sysctl -qw net.ipv4.ip_forward=1
  # Pod-to-pod traffic through a Service on the same bridge must pass iptables (built in here).
  [[ -w /proc/sys/net/bridge/bridge-nf-call-iptables ]] && sysctl -qw net.bridge.bridge-nf-call-iptables=1

  ipt_chain filter "$NODE_CHAIN-FORWARD" FORWARD
  iptables -w 5 -A "$NODE_CHAIN-FORWARD" -i "$NODE_BRIDGE" -o "$NODE_BRIDGE" -j ACCEPT
  iptables -w 5 -A "$NODE_CHAIN-FORWARD" -i "$NODE_BRIDGE" -j DROP
  iptables -w 5 -A "$NODE_CHAIN-FORWARD" -o "$NODE_BRIDGE" -j DROP
  ipt_chain filter "$NODE_CHAIN-INPUT" INPUT
  iptables -w 5 -A "$NODE_CHAIN-INPUT" -i lo -j RETURN
  iptables -w 5 -A "$NODE_CHAIN-INPUT" -i "$NODE_BRIDGE" -j RETURN
  iptables -w 5 -A "$NODE_CHAIN-INPUT" -p tcp --dport "$APISERVER_PORT" -j DROP
  iptables -w 5 -A "$NODE_CHAIN-INPUT" -p tcp --dport "$KUBELET_PORT" -j DROP
  iptables -w 5 -A "$NODE_CHAIN-INPUT" -p udp --dport 53 -d "$NODE_IP" -j DROP
  iptables -w 5 -A "$NODE_CHAIN-INPUT" -p tcp --dport 53 -d "$NODE_IP" -j DROP
}

# kube-proxy inserts its jumps (with ACCEPTs for its own marks) at the top of INPUT and FORWARD;
# ours must come first, so that nothing from the pod bridge is forwarded off the machine.
node_net_first() {
  local parent chain
  for parent in INPUT FORWARD; do
    chain=$NODE_CHAIN-$parent
    [[ $(iptables -w 5 -S "$parent" 2>/dev/null | sed -n 2p) == "-A $parent -j $chain" ]] && continue
    iptables -w 5 -D "$parent" -j "$chain" 2>/dev/null || true
    iptables -w 5 -I "$parent" 1 -j "$chain"
  done
}

# The kubelet's own chains (it has no cleanup flag): KUBE-FIREWALL (drops martian traffic to
# 127.0.0.0/8, jumped to from INPUT and OUTPUT), its canaries and kube-proxy's hint chain.
kubelet_chains_rm() {
  local ipt table chain i
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for ((i = 0; i < 10; i++)); do "$ipt" -w 5 -D INPUT -j KUBE-FIREWALL 2>/dev/null || break; done
    for ((i = 0; i < 10; i++)); do "$ipt" -w 5 -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || break; done
    for table in filter nat mangle; do
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT KUBE-PROXY-CANARY; do
        "$ipt" -w 5 -t "$table" -F "$chain" 2>/dev/null && "$ipt" -w 5 -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

node_net_status() {
  local missing=()
  ip -4 addr show dev "$NODE_LINK" 2>/dev/null | grep -q "inet $NODE_IP/" || missing+=("$NODE_LINK $NODE_IP")
  ip -4 addr show dev "$NODE_BRIDGE" 2>/dev/null | grep -q "inet $NODE_POD_GATEWAY/" || missing+=("bridge $NODE_BRIDGE")
  ip route show type blackhole 2>/dev/null | grep -q "^blackhole $KWOK_POD_CIDR" || missing+=("blackhole $KWOK_POD_CIDR")
  iptables -w 5 -S "$NODE_CHAIN-FORWARD" >/dev/null 2>&1 || missing+=("chain $NODE_CHAIN-FORWARD")
  iptables -w 5 -S "$NODE_CHAIN-INPUT" >/dev/null 2>&1 || missing+=("chain $NODE_CHAIN-INPUT")
  if ((${#missing[@]})); then
    printf '%-24s INCOMPLETE (missing: %s)\n' node-network "$(IFS=,; echo "${missing[*]}")"
    return 1
  fi
  printf '%-24s ok (%s on %s, pods %s on %s, blackhole %s)\n' node-network "$NODE_IP" "$NODE_LINK" "$NODE_POD_CIDR" "$NODE_BRIDGE" "$KWOK_POD_CIDR"
}

node_net_down() {
  [[ $(id -u) == 0 ]] || return 0
  local owner_file=$NODE_OWNER_DIR/node-$NODE_LINK.owner
  if [[ -f $owner_file && $(cat "$owner_file") != "$STACK_DIR" ]]; then
    log "node network belongs to $(cat "$owner_file"); leaving it"
    return 0
  fi
  if [[ -x $BIN_DIR/kube-proxy ]] && iptables -w 5 -t nat -S KUBE-SERVICES >/dev/null 2>&1; then
    log "removing kube-proxy's iptables rules (kube-proxy --cleanup)"
    "$BIN_DIR/kube-proxy" --cleanup >>"$LOGS/kube-proxy.log" 2>&1 || log "kube-proxy --cleanup failed (see $LOGS/kube-proxy.log)"
  fi
  ipt_chain_rm filter "$NODE_CHAIN-FORWARD" FORWARD
  ipt_chain_rm filter "$NODE_CHAIN-INPUT" INPUT
  kubelet_chains_rm
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && ip link del "$NODE_BRIDGE"
  ip link show "$NODE_LINK" >/dev/null 2>&1 && ip link del "$NODE_LINK"
  ip route del blackhole "$KWOK_POD_CIDR" 2>/dev/null || true
  if [[ -f $NODE_DIR/ip_forward.orig ]]; then
    sysctl -qw net.ipv4.ip_forward="$(cat "$NODE_DIR/ip_forward.orig")"
    rm -f "$NODE_DIR/ip_forward.orig"
  fi
  rm -f "$owner_file"
}

# --- certificates and configuration --------------------------------------------------------

# Writes stdin to <file> only when the content differs: kube-proxy exits when its config file
# changes, so an unchanged file must keep its inode and mtime.
put() { # <file>
  local tmp; tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}


# Signs <name>.crt with the stack CA. <subject> and an extension file's body.
node_cert() { # <name> <subject> <ext>
  local name=$1 subj=$2 ext=$3
  [[ -f $PKI/$name.crt ]] && return
  (
    cd "$PKI" || exit
    printf '%s\n' "$ext" >"$name.ext"
    openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
      -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr"
  )
}

client_ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

node_kubeconfig() { # <file> <cert name>
  local b64='base64 -w0'
  put "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $($b64 <"$PKI/ca.crt")
users:
- name: user
  user:
    client-certificate-data: $($b64 <"$PKI/$2.crt")
    client-key-data: $($b64 <"$PKI/$2.key")
contexts:
- name: local
  context: {cluster: local, user: user}
current-context: local
EOF
  chmod 600 "$1"
}

node_pki() {
  node_cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" "$client_ext"
  node_cert kubelet-serving "/CN=$NODE_NAME" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  # The API server's client certificate towards the kubelet (logs, exec, port-forward).
  node_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client_ext"
  # Bound by the bootstrap policy to system:node-proxier.
  node_cert kube-proxy "/CN=system:kube-proxy" "$client_ext"
  node_cert coredns "/CN=system:team-operator:coredns" "$client_ext"
  node_kubeconfig "$NODE_DIR/kubelet.kubeconfig" kubelet-client
  node_kubeconfig "$NODE_DIR/kube-proxy.kubeconfig" kube-proxy
  node_kubeconfig "$NODE_DIR/coredns.kubeconfig" coredns
}

# A runc that clamps a negative oomScoreAdj to 0 before `create`: this machine's root lacks
# CAP_SYS_RESOURCE, so the pod sandbox's -998 is refused (runc reports only "can't get final
# child's PID from pipe: EOF").
write_runc_wrapper() {
  {
    cat <<EOF
#!/bin/bash
# Generated by hack/node.sh: clamps negative process.oomScoreAdj to 0, then runs runc.
runc=$NODE_BIN_DIR/runc
EOF
    cat <<'EOF'
bundle="" create=0 prev=""
for a in "$@"; do
  case $prev in --bundle | -b) bundle=$a ;; esac
  case $a in --bundle=*) bundle=${a#--bundle=} ;; create | run) create=1 ;; esac
  prev=$a
done
if ((create)); then
  cfg=${bundle:-.}/config.json
  if [[ -f $cfg ]] && jq -e '(.process.oomScoreAdj // 0) < 0' "$cfg" >/dev/null 2>&1; then
    jq '.process.oomScoreAdj = 0' "$cfg" >"$cfg.clamped" && mv "$cfg.clamped" "$cfg"
  fi
fi
exec "$runc" "$@"
EOF
  } | put "$NODE_DIR/runc"
  chmod 755 "$NODE_DIR/runc"
}

write_node_config() {
  mkdir -p "$NODE_RUN"/{kubelet,containerd-state,cni-ipam,net.d,volumes} "$NODE_KEEP"/containerd "$NODE_DIR/opt"
  write_runc_wrapper
  mkdir -p "$NODE_DIR/certs.d/_default"
  put "$NODE_DIR/certs.d/_default/hosts.toml" <<'EOF'
# Generated by hack/node.sh: no registry is reachable from the node (see containerd.toml).
server = "http://127.0.0.1:1"

[host."http://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]
EOF
  put "$NODE_DIR/containerd.toml" <<EOF
# Generated by hack/node.sh. containerd $CONTAINERD_VERSION; every path is under $NODE_DIR.
version = 4
root = '$NODE_KEEP/containerd'
state = '$NODE_RUN/containerd-state'
imports = []
oom_score = 0
# NRI would listen on /var/run/nri; nothing here uses it.
disabled_plugins = ['io.containerd.nri.v1.nri']

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = '$CTRD_SOCK'
  [plugins.'io.containerd.server.v1.ttrpc']
    address = '$CTRD_SOCK.ttrpc'
  [plugins.'io.containerd.server.v1.debug']
    address = ''
  [plugins.'io.containerd.server.v1.metrics']
    address = ''
  [plugins.'io.containerd.internal.v1.opt']
    path = '$NODE_DIR/opt'
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = '$NODE_DIR/opt/image-verifier'
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    # No registry is reachable: images come from hack/images.sh, pods use IfNotPresent/Never.
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '$PAUSE_IMAGE'
    # Every registry resolves to 127.0.0.1:1, which refuses at once: a pod naming an image that
    # was not imported fails with ErrImagePull, and no pull (not even a DNS lookup of the
    # registry's name) ever leaves the machine.
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = '$NODE_DIR/certs.d'
  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    netns_mounts_under_state_dir = true
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '$NODE_DIR/runc'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['$NODE_BIN_DIR/cni']
      conf_dir = '$NODE_RUN/net.d'
      max_conf_num = 1
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
EOF
  put "$NODE_RUN/net.d/10-team-operator.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "team-operator",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE_RUN/cni-ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # Pods get only the cluster's search domains and CoreDNS; no host resolver leaks in.
  put "$NODE_DIR/resolv.conf" </dev/null
  put "$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine boots cgroup v1 (hybrid); kubelet 1.35+ refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CTRD_SOCK
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
# Only holders of a certificate from the stack's CA get past authentication.
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $NODE_DIR/resolv.conf
staticPodPath: ""
registerNode: true
registerWithTaints:
- {key: $NODE_TAINT_KEY, value: "true", effect: NoSchedule}
maxPods: 64
# No CAP_SYS_RESOURCE here: negative OOM scores are refused.
oomScoreAdj: 0
failSwapOn: false
# Imported images cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Absolute, small thresholds: the machine's disk is shared with cargo's target dirs, and a
# percentage of a large disk would refuse pods while gigabytes are still free.
evictionHard: {memory.available: 50Mi, nodefs.available: 256Mi, imagefs.available: 256Mi, nodefs.inodesFree: 1%}
evictionPressureTransitionPeriod: 30s
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
EOF
  put "$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $NODE_NAME
clientConnection: {kubeconfig: $NODE_DIR/kube-proxy.kubeconfig}
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
clusterCIDR: $NODE_POD_CIDR
detectLocalMode: ClusterCIDR
nodePortAddresses: [$NODE_IP/32]
oomScoreAdj: 0
iptables:
  # Service traffic is SNAT'd to the node, so replies between pods on one bridge come back
  # through the same conntrack entry.
  masqueradeAll: true
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 0s
# Leave the machine's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  # Only the cluster domain (and the reverse zones of the Service and pod ranges); every other
  # name gets NXDOMAIN here: no forward plugin, no outside resolver.
  put "$NODE_DIR/Corefile" <<EOF
cluster.local:53 10.96.0.0/16:53 ${NODE_POD_CIDR}:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:$COREDNS_HEALTH_PORT
    ready 127.0.0.1:$COREDNS_READY_PORT
    kubernetes cluster.local 10.96.0.0/16 $NODE_POD_CIDR {
        kubeconfig $NODE_DIR/coredns.kubeconfig
        pods disabled
        ttl 5
    }
    cache 5
}
.:53 {
    bind $NODE_IP
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
}

# Read access CoreDNS's kubernetes plugin needs (as on a real cluster's system:coredns).
node_rbac() {
  kubectl_admin apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "team-operator-stack:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "team-operator-stack:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "team-operator-stack:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:team-operator:coredns"}
EOF
}

# Local volumes for PersistentVolumeClaims on the real node (the chart's bundled Redis): a
# default StorageClass without a provisioner, bound when the pod is scheduled, and NODE_PVS
# PersistentVolumes, directories under the node's run dir (wiped by down with the cluster).
# A PV whose claim was deleted stays Released (no provisioner can delete a local volume): each
# `up` empties and re-creates those, so they can be claimed again.
NODE_PVS=${NODE_PVS:-8}
NODE_STORAGE_CLASS=team-operator-local

node_volumes() {
  local pv
  for pv in $(kubectl_admin get pv -l "$NODE_TAINT_KEY=true" \
    -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name}{"\n"}{end}' 2>/dev/null); do
    log "recycling the released volume $pv"
    kubectl_admin delete pv "$pv" --wait=true --timeout=20s >/dev/null 2>&1 || continue
    rm -rf "${NODE_RUN:?}/volumes/pv-${pv##*-pv-}"
  done
  local i manifest="apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $NODE_STORAGE_CLASS
  annotations: {storageclass.kubernetes.io/is-default-class: \"true\"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
"
  for ((i = 0; i < NODE_PVS; i++)); do
    mkdir -p "$NODE_RUN/volumes/pv-$i"
    chmod 0777 "$NODE_RUN/volumes/pv-$i"
    manifest+="---
apiVersion: v1
kind: PersistentVolume
metadata: {name: $NODE_NAME-pv-$i, labels: {$NODE_TAINT_KEY: \"true\"}}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: $NODE_STORAGE_CLASS
  local: {path: $NODE_RUN/volumes/pv-$i}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}]
"
  done
  kubectl_admin apply -f - <<<"$manifest" >/dev/null
}

# --- the node's components -----------------------------------------------------------------

# The config a component was started with, to restart it when `up` writes a different one.
node_config_of() {
  case $1 in
    containerd) echo "$NODE_DIR/containerd.toml" ;;
    kubelet) echo "$NODE_DIR/kubelet.yaml" ;;
    coredns) echo "$NODE_DIR/Corefile" ;;
  esac
}

record_config() { # <component>
  sha256sum "$(node_config_of "$1")" | cut -d' ' -f1 >"$PIDS/$1.config"
}

# Started with another config than the one written now (or by a script that did not record it).
node_stale() { # <component>
  local cfg; cfg=$(node_config_of "$1")
  [[ -n $cfg ]] || return 1
  [[ $(cat "$PIDS/$1.config" 2>/dev/null) != "$(sha256sum "$cfg" | cut -d' ' -f1)" ]]
}

start_containerd() {
  write_node_config
  record_config containerd
  # The shim and runc are found through PATH.
  spawn containerd env PATH="$NODE_BIN_DIR:$PATH" "$NODE_BIN_DIR/containerd" --config "$NODE_DIR/containerd.toml"
}

start_kubelet() {
  # The sandbox image first; the agent (and agent-root) and Redis images need no cargo build, so they come too.
  # (The project image needs the crate built: hack/test.sh and hack/demo.sh import it.)
  "$HACK_DIR/images.sh" pause agent agent-root redis >>"$LOGS/images.log" 2>&1 ||
    { tail -n 20 "$LOGS/images.log" >&2; die "importing the base images failed (see $LOGS/images.log)"; }
  record_config kubelet
  spawn kubelet "$BIN_DIR/kubelet" \
    --config="$NODE_DIR/kubelet.yaml" \
    --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
    --root-dir="$NODE_RUN/kubelet" --cert-dir="$NODE_RUN/kubelet/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --node-labels="$NODE_LABEL,type=real" \
    --v=1
}

start_kube-proxy() {
  spawn kube-proxy "$BIN_DIR/kube-proxy" --config="$NODE_DIR/kube-proxy.yaml" --v=1
}

start_coredns() {
  node_rbac
  record_config coredns
  spawn coredns "$NODE_BIN_DIR/coredns" -conf "$NODE_DIR/Corefile"
}

# Before the kubelet stops: delete the node's pods through the API (the kubelet stops their
# containers and tears down their sandboxes and networks through the CRI and CNI). Bounded.
node_drain() {
  alive kubelet && healthy kube-apiserver || return 0
  local pods
  pods=$(kubectl_admin get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null | wc -l)
  ((pods)) || return 0
  log "deleting the $pods pod(s) on $NODE_NAME (the kubelet stops their containers)"
  local ns name
  kubectl_admin get pods -A --field-selector "spec.nodeName=$NODE_NAME" \
    -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name}{"\n"}{end}' 2>/dev/null |
    while read -r ns name; do
      [[ -n $name ]] && kubectl_admin -n "$ns" delete pod "$name" --grace-period=2 --wait=false >/dev/null 2>&1 || true
    done
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    pods=$(kubectl_admin get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null | wc -l)
    ((pods == 0)) && break
    sleep 0.5
  done
  ((pods == 0)) || log "$pods pod(s) still on $NODE_NAME after 30s; removing their containers directly"
}

# With containerd still up and the kubelet gone: remove every container and task it still has.
node_containers_rm() {
  alive containerd || return 0
  local c i
  for ((i = 0; i < 3; i++)); do
    mapfile -t cs < <(ctr_node containers list -q 2>/dev/null)
    ((${#cs[@]})) || break
    for c in "${cs[@]}"; do
      ctr_node tasks kill -s KILL "$c" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for c in "${cs[@]}"; do
      ctr_node tasks delete -f "$c" >/dev/null 2>&1 || true
      ctr_node containers delete "$c" >/dev/null 2>&1 || true
    done
  done
}

# Mounts left under the node's directories (pod volumes, netns, rootfs), deepest first.
node_mounts_rm() {
  local m i
  for ((i = 0; i < 3; i++)); do
    mapfile -t ms < <(awk -v d="$NODE_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    ((${#ms[@]})) || return 0
    for m in "${ms[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  done
  mapfile -t ms < <(awk -v d="$NODE_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo)
  ((${#ms[@]} == 0)) || log "mounts still under $NODE_DIR: ${ms[*]}"
}

# The kubelet's pod cgroups (cgroupfs driver, cgroup v1), empty once the containers are gone.
node_cgroups_rm() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods; do
    [[ -d $d ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# Called by stack.sh down for this stack's node, in order, after node_drain.
node_down() {
  stop_one coredns
  stop_one kube-proxy
  stop_one kubelet
  node_containers_rm
  stop_one containerd
  node_mounts_rm
  # The kubepods cgroups and the network belong to whichever stack runs the node.
  local owner; owner=$(cat "$NODE_OWNER_DIR/node-$NODE_LINK.owner" 2>/dev/null || true)
  if [[ -z $owner || $owner == "$STACK_DIR" ]]; then node_cgroups_rm; fi
  node_net_down
  rm -rf "$NODE_RUN"
}
