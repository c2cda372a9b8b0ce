#!/usr/bin/env bash
# Installs what the local stack, the real node and the tests need on a fresh Debian bookworm
# machine (Go and Rust toolchains preinstalled): apt packages, the Python MCP SDK that
# tests/mcp.rs drives, npm packages (none yet). Idempotent: checks first, so a warm run takes
# well under a second and touches no registry. `make demo`, `make test` and `.ci/run` call it.
#
#   hack/setup.sh          install what is missing
#   hack/setup.sh check    only report what is missing (exit 1 if anything is)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

mode=${1:-install}

# apt packages. The node needs iptables (kube-proxy, the stack's own chains), iproute2 (bridge,
# dummy interface, blackhole route), libseccomp-dev + pkg-config (runc with seccomp),
# busybox-static (the agent image's shell), redis-server (the stack's Redis and the Redis image).
APT_PACKAGES=(
  redis-server redis-tools openssl curl make build-essential pkg-config ca-certificates
  iptables iproute2 libseccomp-dev busybox-static util-linux jq
)

# Python packages for the tests (pip, pinned). tests/mcp.rs runs tests/mcp-client/client.py.
PIP_PACKAGES=(mcp==2.3.0)

# --- npm packages ---------------------------------------------------------------------------
# Global npm packages, pinned as name@version (e.g. agent CLIs for the agent images). Add them
# here; each is installed with `npm install -g` when `npm ls -g name` does not show that version.
NPM_PACKAGES=(opencode-ai@1.18.33 @anthropic-ai/claude-code@2.1.328 @openai/codex@0.171.0)  # teamctl run's runtimes (tests/loop.rs)
# --- end npm packages -----------------------------------------------------------------------

sudo=""
[[ $(id -u) == 0 ]] || sudo=sudo

missing_apt() {
  local status pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || echo "$pkg"
  done
}

# pip name==version not installed (at that version) for the python3 on PATH.
missing_pip() {
  local spec
  for spec in "${PIP_PACKAGES[@]}"; do
    python3 - "${spec%%==*}" "${spec#*==}" 2>/dev/null <<'EOF' || echo "$spec"
import sys, importlib.metadata as m
sys.exit(0 if m.version(sys.argv[1]) == sys.argv[2] else 1)
EOF
  done
}

missing_npm() {
  local spec name
  for spec in ${NPM_PACKAGES[@]+"${NPM_PACKAGES[@]}"}; do
    name=${spec%@*}
    npm ls -g --depth=0 "$name" 2>/dev/null | grep -qF -- "$spec" || echo "$spec"
  done
}

t0=$SECONDS
mapfile -t apt_need < <(missing_apt)
mapfile -t pip_need < <(missing_pip)
mapfile -t npm_need < <(missing_npm)

for tool in go cargo python3; do
  command -v "$tool" >/dev/null || die "$tool not found on PATH (the toolchains are expected preinstalled)"
done

if [[ $mode == check ]]; then
  rc=0
  ((${#apt_need[@]} == 0)) || { log "missing apt packages: ${apt_need[*]}"; rc=1; }
  ((${#pip_need[@]} == 0)) || { log "missing pip packages: ${pip_need[*]}"; rc=1; }
  ((${#npm_need[@]} == 0)) || { log "missing npm packages: ${npm_need[*]}"; rc=1; }
  ((rc)) || log "setup complete"
  exit $rc
fi

if ((${#apt_need[@]})); then
  log "apt: installing ${apt_need[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${apt_need[@]}"
fi
# Debian's redis-server package starts a system redis on 6379; the stack runs its own on
# REDIS_PORT, so a system one is only in the way. Leave one that was there before us alone.
if [[ " ${apt_need[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null &&
  systemctl is-active -q redis-server 2>/dev/null; then
  log "apt: stopping and disabling the system redis-server the package started"
  $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

if ((${#pip_need[@]})); then
  log "pip: installing ${pip_need[*]}"
  python3 -m pip install -q --break-system-packages "${pip_need[@]}" 2>/dev/null ||
    python3 -m pip install -q "${pip_need[@]}"
fi

if ((${#npm_need[@]})); then
  command -v npm >/dev/null || die "npm not found (needed for: ${npm_need[*]})"
  log "npm: installing ${npm_need[*]}"
  $sudo npm install -g --no-fund --no-audit "${npm_need[@]}"
fi

# Verify: a failed or partial install must stop here, not later in a test.
mapfile -t apt_need < <(missing_apt)
mapfile -t pip_need < <(missing_pip)
mapfile -t npm_need < <(missing_npm)
((${#apt_need[@]} + ${#pip_need[@]} + ${#npm_need[@]} == 0)) ||
  die "still missing after install: ${apt_need[*]} ${pip_need[*]} ${npm_need[*]}"
log "setup complete in $((SECONDS - t0))s"
