#!/usr/bin/env bash
# The kubectl plugin for krew: packs the static teamctl as kubectl-team and writes its manifest
# from plugins/team.yaml with this version, the release URI and the archive's sha256.
#
#   hack/krew.sh [OUT_DIR]   OUT_DIR (default target/krew) gets kubectl-team_linux_amd64.tar.gz
#                            and team.yaml; TEAMCTL_BIN picks the binary (default: a release
#                            build of teamctl, built if missing)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

OUT=${1:-$REPO_DIR/target/krew}
[[ $(uname -m) == x86_64 ]] || die "the plugin is packed for linux/amd64 (the static build of hack/lib.sh); this is $(uname -m)"
version=v$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_DIR/Cargo.toml" | head -n1)
bin=${TEAMCTL_BIN:-$CARGO_OUT/release/teamctl}
if [[ ! -x $bin ]]; then
  log "building teamctl (release, static)"
  (cd "$REPO_DIR" && cargo build --release --bin teamctl)
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$bin" "$stage/kubectl-team"
mkdir -p "$OUT"
archive=$OUT/kubectl-team_linux_amd64.tar.gz
tar -C "$stage" --owner=0 --group=0 -czf "$archive" kubectl-team
sha=$(sha256sum "$archive" | cut -d' ' -f1)
sed -e "/^#/d" -e "s/VERSION/$version/g" -e "s/SHA256_LINUX_AMD64/$sha/" "$REPO_DIR/plugins/team.yaml" >"$OUT/team.yaml"
log "wrote $archive and $OUT/team.yaml ($version, sha256 $sha)"
