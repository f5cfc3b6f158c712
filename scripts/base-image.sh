#!/usr/bin/env bash
# Builds the runtime base image locally, for machines that cannot pull from a registry:
# a Debian 12 minbase root filesystem made with debootstrap and imported into Docker under
# the tag the Dockerfile's runtime stages start FROM (default debian:bookworm-slim).
# Idempotent: does nothing if an image with that tag exists. Needs root and a Debian mirror.
#
#   scripts/base-image.sh                      # tag debian:bookworm-slim
#   BASE_IMAGE=my/base:12 scripts/base-image.sh
#   DEBIAN_MIRROR=http://mirror.example/debian scripts/base-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh

tag=${BASE_IMAGE:-debian:bookworm-slim}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag exists: nothing to do"
  exit 0
fi
ensure_commands debootstrap:debootstrap

root=$(mktemp -d /tmp/ferrokv-rootfs.XXXXXX)
cleanup() {
  # debootstrap mounts /proc and /sys inside the target; never delete through a mount.
  local m
  awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" || true
  done
  rm -rf --one-file-system "$root"
}
trap cleanup EXIT

echo "== debootstrap --variant=minbase $suite ($mirror)"
start=$SECONDS
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -n 30 "$root.log" >&2
  rm -f "$root.log"
  exit 1
}
rm -f "$root.log"

# Trim what a slim image leaves out: package caches, indexes, documentation.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
  "$root"/usr/share/info/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old

echo "== docker import as $tag"
tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' \
  --change "LABEL org.opencontainers.image.description=\"Debian $suite minbase, built locally by ferrokv scripts/base-image.sh\"" \
  - "$tag" >/dev/null
docker image inspect --format '{{.Id}} {{.Size}}' "$tag" | awk -v t="$tag" -v s=$((SECONDS - start)) \
  '{ printf "built %s (%s, %.0f MB) in %ds\n", t, substr($1, 1, 19), $2 / 1e6, s }'
