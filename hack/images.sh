#!/usr/bin/env bash
# Container images without docker or a registry: writes OCI image layouts (one uncompressed layer,
# config, manifest, index.json, oci-layout) from files on this machine and imports them into the
# real node's containerd (`ctr -n k8s.io images import`). Pods use them with imagePullPolicy
# IfNotPresent or Never.
#
#   hack/images.sh [IMAGE…]   build and import the named images (default: all)
#   hack/images.sh list       print the image names
#
#   pause    localhost/team-operator/pause:3.10      static C pause (gcc -static), the sandbox image
#   agent    localhost/team-operator/agent:dev       busybox-static as /bin/sh & co, the scripted
#                                                    agents in /usr/local/bin, uid 65532 (member
#                                                    pods get teamctl in /opt/agentteams/bin, an
#                                                    emptyDir the init container fills)
#   agent-root  localhost/team-operator/agent-root:dev   the agent image whose config says root
#                                                    (User 0:0), as busybox's and most public
#                                                    images do (tests/node_failures.rs)
#   opencode localhost/team-agent-opencode:<version> the opencode binary of the npm package
#                                                    hack/setup.sh pins (opencode-ai), with its
#                                                    glibc, bash, busybox tools, CA certificates,
#                                                    uid 1000 (HOME /home/agent)
#   claude   localhost/team-agent-claude:<version>   the same for @anthropic-ai/claude-code
#   codex    localhost/team-agent-codex:<version>    the same for @openai/codex (its static musl
#                                                    binary from the linux-x64 platform package)
#   redis    localhost/team-operator/redis:dev       Debian's redis-server and redis-cli with their
#                                                    shared libraries, uid 999 (the chart's)
#   project  localhost/team-operator/team-operator:dev   the layout of /Dockerfile: team-operator
#            and teamctl in /usr/local/bin, /teamctl, static binaries, CA certificates, uid 65532,
#            entrypoint team-operator, cmd controller. From the static debug build in
#            $CARGO_OUT/debug (hack/lib.sh; TEAM_OPERATOR_PROFILE_DIR overrides); binaries are
#            stripped of debug info in the image.
#
# The layouts are kept in $CACHE_DIR/images/<image>/ (an image whose inputs did not change is
# not written again, and not imported again when containerd has its digest).
# Env: NODE_* / TEAM_OPERATOR_STACK as for hack/stack.sh (which containerd), IMAGE_TAG (dev).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$HACK_DIR/node.sh"

IMAGE_TAG=${IMAGE_TAG:-dev}
IMAGES_DIR=$CACHE_DIR/images
PROFILE_DIR=${TEAM_OPERATOR_PROFILE_DIR:-$CARGO_OUT/debug}
ALL=(pause agent agent-root redis project opencode claude codex)
# The agent runtimes' npm packages (hack/setup.sh installs them) and their binaries in them.
NPM_ROOT=$(npm root -g 2>/dev/null || echo /usr/lib/node_modules)
declare -A RUNTIME_PACKAGE=([opencode]=opencode-ai [claude]=@anthropic-ai/claude-code [codex]=@openai/codex)
declare -A RUNTIME_BINARY=([opencode]=bin/opencode.exe [claude]=bin/claude.exe
  [codex]=node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex)

# The installed version of a runtime's package: the image's tag.
runtime_version() { jq -r .version "$NPM_ROOT/${RUNTIME_PACKAGE[$1]}/package.json" 2>/dev/null || echo missing; }

image_name() {
  case $1 in
    pause) echo "$PAUSE_IMAGE" ;;
    agent) echo "localhost/team-operator/agent:$IMAGE_TAG" ;;
    agent-root) echo "localhost/team-operator/agent-root:$IMAGE_TAG" ;;
    redis) echo "localhost/team-operator/redis:$IMAGE_TAG" ;;
    project) echo "localhost/team-operator/team-operator:$IMAGE_TAG" ;;
    opencode | claude | codex) echo "localhost/team-agent-$1:$(runtime_version "$1")" ;;
    *) die "unknown image $1 (one of: ${ALL[*]})" ;;
  esac
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# A binary that needs no shared library (ldd says "statically linked" for static-pie and exits 0).
is_static() { ! readelf -d "$1" 2>/dev/null | grep -q '(NEEDED)'; }

# The ELF interpreter and the shared libraries of the given binaries (from ldd), deduplicated.
libs_of() {
  ldd "$@" 2>/dev/null | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u
}

copy_libs() { # <rootfs> <binary…>
  local root=$1 lib; shift
  for lib in $(libs_of "$@"); do
    install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
}

# Minimal /etc/passwd, /etc/group and an empty /tmp (1777), as distroless has.
base_files() { # <rootfs> <uid> <user>
  local root=$1 uid=$2 user=$3
  mkdir -p "$root/etc" "$root/tmp"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:%s:%s:%s:/home/%s:/sbin/nologin\n' "$user" "$uid" "$uid" "$user" "$user" >"$root/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$user" "$uid" >"$root/etc/group"
  mkdir -p "$root/home/$user" && chown "$uid:$uid" "$root/home/$user"
}

# --- rootfs of each image ------------------------------------------------------------------

# Prints the image config's "config" object (JSON) after filling <rootfs>.
rootfs_pause() {
  local root=$1
  cat >"$root.c" <<'EOF'
/* The pod sandbox's process: sleeps until told to stop, reaps orphans (PID 1 of the pod). */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, stop); signal(SIGTERM, stop); signal(SIGCHLD, reap);
  for (;;) pause();
}
EOF
  mkdir -p "$root"
  gcc -static -Os -s -o "$root/pause" "$root.c"
  rm -f "$root.c"
  echo '{"User":"65535:65535","Entrypoint":["/pause"]}'
}

# busybox-static as /bin/sh and its applets, /usr/bin/env.
busybox_tools() { # <rootfs>
  local root=$1 applet
  [[ -x /bin/busybox ]] && is_static /bin/busybox || die "/bin/busybox is not the static one — apt-get install busybox-static (hack/setup.sh)"
  mkdir -p "$root/bin" "$root/usr/bin"
  install -m 0755 /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox || -e $root/bin/$applet ]] || ln -sf busybox "$root/bin/$applet"
  done
  ln -sf ../../bin/env "$root/usr/bin/env"
}

rootfs_agent() {
  local root=$1
  busybox_tools "$root"
  mkdir -p "$root/usr/local/bin"
  install -m 0755 "$REPO_DIR"/examples/agents/*.sh "$root/usr/local/bin/"
  base_files "$root" 65532 nonroot
  echo '{"User":"65532:65532","Env":["PATH=/opt/agentteams/bin:/usr/local/bin:/bin:/usr/bin","HOME=/home/nonroot"],"WorkingDir":"/home/nonroot","Cmd":["/bin/sh"]}'
}

rootfs_agent-root() {
  rootfs_agent "$1" | jq -c '.User = "0:0"'
}

# An agent runtime's native binary from its npm package (single executables: opencode's and
# Claude Code's linked against glibc, whose libraries come along; Codex's static musl) with bash
# (the runtimes run their shell tools in it; Claude Code refuses to start without a POSIX shell in
# SHELL) and busybox's tools, CA certificates, uid 1000.
# Their outside traffic is switched off by `teamctl run` (see src/teamctl/run/).
rootfs_runtime() { # <rootfs> <runtime>
  local root=$1 runtime=$2 bin
  bin=$(readlink -f "$NPM_ROOT/${RUNTIME_PACKAGE[$runtime]}/${RUNTIME_BINARY[$runtime]}")
  [[ -x $bin ]] || die "$runtime is not installed in $NPM_ROOT — hack/setup.sh installs it"
  mkdir -p "$root/bin"
  install -m 0755 /bin/bash "$root/bin/bash"
  busybox_tools "$root"
  install -D -m 0755 "$bin" "$root/usr/local/bin/$runtime"
  copy_libs "$root" "$bin" /bin/bash
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  base_files "$root" 1000 agent
  echo '{"User":"1000:1000","Env":["PATH=/opt/agentteams/bin:/usr/local/bin:/usr/bin:/bin","HOME=/home/agent","SHELL=/bin/bash","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"WorkingDir":"/home/agent","Cmd":["'"$runtime"'"]}'
}
rootfs_opencode() { rootfs_runtime "$1" opencode; }
rootfs_claude() { rootfs_runtime "$1" claude; }
rootfs_codex() { rootfs_runtime "$1" codex; }

rootfs_redis() {
  local root=$1
  local server cli=/usr/bin/redis-cli
  server=$(readlink -f /usr/bin/redis-server)
  [[ -x $server && -x $cli ]] || die "redis-server/redis-cli not found — hack/setup.sh installs them"
  install -D -m 0755 "$server" "$root/usr/bin/redis-server"
  install -D -m 0755 "$cli" "$root/usr/bin/redis-cli"
  copy_libs "$root" "$server" "$cli"
  base_files "$root" 999 redis
  mkdir -p "$root/data" && chown 999:999 "$root/data"
  echo '{"User":"999:999","Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"WorkingDir":"/data","Entrypoint":["redis-server"],"ExposedPorts":{"6379/tcp":{}}}'
}

# The Dockerfile's runtime stage: distroless/cc (glibc, libgcc, CA certificates, nonroot 65532)
# plus /usr/local/bin/team-operator, /usr/local/bin/teamctl and /teamctl.
rootfs_project() {
  local root=$1 op=$PROFILE_DIR/team-operator ctl=$PROFILE_DIR/teamctl bin
  for bin in "$op" "$ctl"; do
    [[ -x $bin ]] || die "$bin not built — make images (cargo build --bins with hack/lib.sh's target)"
    is_static "$bin" || die "$bin is dynamically linked; build it with hack/lib.sh's CARGO_BUILD_TARGET and crt-static RUSTFLAGS"
  done
  install -D -m 0755 "$op" "$root/usr/local/bin/team-operator"
  install -D -m 0755 "$ctl" "$root/usr/local/bin/teamctl"
  install -D -m 0755 "$ctl" "$root/teamctl"
  strip --strip-debug "$root/usr/local/bin/team-operator" "$root/usr/local/bin/teamctl" "$root/teamctl"
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  base_files "$root" 65532 nonroot
  echo '{"User":"65532:65532","Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"WorkingDir":"/home/nonroot","Entrypoint":["/usr/local/bin/team-operator"],"Cmd":["controller"],"ExposedPorts":{"8080/tcp":{},"8081/tcp":{}}}'
}

# --- OCI layout ----------------------------------------------------------------------------

# Writes an OCI image layout for <name> in <dir> from <rootfs> and the config object.
write_layout() { # <dir> <name> <rootfs> <config json>
  local dir=$1 name=$2 root=$3 config=$4
  rm -rf "$dir" && mkdir -p "$dir/blobs/sha256"
  local layer=$dir/layer.tar
  # Reproducible: sorted, numeric owners as in the rootfs, fixed mtime.
  tar --sort=name --numeric-owner --mtime=@0 --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$root" -cf "$layer" .
  local layer_sha layer_size
  layer_sha=$(sha "$layer"); layer_size=$(stat -c %s "$layer")
  mv "$layer" "$dir/blobs/sha256/$layer_sha"
  jq -cn --argjson c "$config" --arg diff "sha256:$layer_sha" --arg name "$name" \
    '{architecture: "amd64", os: "linux", config: $c, rootfs: {type: "layers", diff_ids: [$diff]},
      history: [{created_by: "hack/images.sh \($name)"}]}' >"$dir/config.json"
  local cfg_sha cfg_size
  cfg_sha=$(sha "$dir/config.json"); cfg_size=$(stat -c %s "$dir/config.json")
  mv "$dir/config.json" "$dir/blobs/sha256/$cfg_sha"
  jq -cn --arg cs "sha256:$cfg_sha" --argjson cz "$cfg_size" --arg ls "sha256:$layer_sha" --argjson lz "$layer_size" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cs, size: $cz},
      layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $ls, size: $lz}]}' >"$dir/manifest.json"
  local man_sha man_size
  man_sha=$(sha "$dir/manifest.json"); man_size=$(stat -c %s "$dir/manifest.json")
  mv "$dir/manifest.json" "$dir/blobs/sha256/$man_sha"
  jq -cn --arg ms "sha256:$man_sha" --argjson mz "$man_size" --arg name "$name" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $ms, size: $mz,
        platform: {architecture: "amd64", os: "linux"},
        annotations: {"io.containerd.image.name": $name, "org.opencontainers.image.ref.name": ($name | sub(".*:"; ""))}}]}' >"$dir/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
  echo "sha256:$man_sha" >"$dir/digest"
}

# Inputs that decide an image's content, hashed, so an unchanged image is not rebuilt.
inputs_of() {
  case $1 in
    pause) sha256sum "$HACK_DIR/images.sh" "$(command -v gcc)" ;;
    agent | agent-root) sha256sum "$HACK_DIR/images.sh" /bin/busybox "$REPO_DIR"/examples/agents/*.sh ;;
    redis) sha256sum "$HACK_DIR/images.sh" "$(readlink -f /usr/bin/redis-server)" /usr/bin/redis-cli ;;
    project) sha256sum "$HACK_DIR/images.sh" "$PROFILE_DIR/team-operator" "$PROFILE_DIR/teamctl" ;;
    opencode | claude | codex) sha256sum "$HACK_DIR/images.sh" /bin/bash /bin/busybox "$NPM_ROOT/${RUNTIME_PACKAGE[$1]}/package.json" ;;
  esac 2>/dev/null | sha256sum | cut -d' ' -f1
}

build_image() { # <image>
  local img=$1 name dir
  name=$(image_name "$img"); dir=$IMAGES_DIR/$img
  local key; key=$(inputs_of "$img")
  if [[ -f $dir/digest && -f $dir/inputs && $(cat "$dir/inputs") == "$key" ]]; then return; fi
  log "writing image $name (OCI layout in $dir)"
  local work; work=$(mktemp -d "$IMAGES_DIR/.work.XXXXXX")
  local config
  config=$("rootfs_$img" "$work/rootfs")
  write_layout "$work/layout" "$name" "$work/rootfs" "$config"
  echo "$key" >"$work/layout/inputs"
  rm -rf "$dir" && mv "$work/layout" "$dir"
  rm -rf "$work"
}

import_image() { # <image>
  local img=$1 name dir digest
  name=$(image_name "$img"); dir=$IMAGES_DIR/$img; digest=$(cat "$dir/digest")
  if [[ $(ctr_node images ls "name==$name" 2>/dev/null | awk 'NR > 1 {print $3}') == "$digest" ]]; then
    ctr_node images label "$name" io.cri-containerd.pinned=pinned >/dev/null
    return
  fi
  log "importing $name ($digest) into containerd ($CTRD_SOCK)"
  tar -C "$dir" -cf - oci-layout index.json blobs |
    ctr_node images import --platform linux/amd64 - >/dev/null
  # Pinned: the kubelet's image GC and its disk-pressure eviction never delete a pinned image
  # (an imported image cannot be pulled again).
  ctr_node images label "$name" io.cri-containerd.pinned=pinned >/dev/null
}

mkdir -p "$IMAGES_DIR"
case ${1:-} in
  list) for i in "${ALL[@]}"; do image_name "$i"; done; exit 0 ;;
  "") set -- "${ALL[@]}" ;;
esac
ctr_node version >/dev/null 2>&1 || die "containerd is not running at $CTRD_SOCK — hack/stack.sh up (NODE=1)"
for img in "$@"; do
  build_image "$img"
  import_image "$img"
done
