#!/usr/bin/env bash
# Builds the ferrokv container image from a binary built on this host, without pulling any image:
#   1. the runtime base image (scripts/base-image.sh: debootstrap + docker import, skipped if present)
#   2. the release binary (${CARGO_TARGET_DIR:-target}/release/ferrokv, via cargo)
#   3. docker build --target runtime-prebuilt of the repository's Dockerfile, tagged
#      ${FERROKV_IMAGE:-ferrokv:dev}, from a small context holding only that binary
#   4. a smoke test: the image runs `ferrokv --version` as its non-root user
# The binary must run on the base image's Debian 12 (glibc 2.36): build it on Debian 12 or older.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/binary.sh

image=${FERROKV_IMAGE:-ferrokv:dev}
start=$SECONDS

scripts/base-image.sh
bin=$(ferrokv_binary)

ctx=$(mktemp -d /tmp/ferrokv-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin" "$ctx/deploy/docker"
cp "$bin" "$ctx/bin/ferrokv"
cp deploy/docker/ferrokv-healthcheck "$ctx/deploy/docker/"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
echo "== docker build --target runtime-prebuilt -t $image"
docker build --quiet --target runtime-prebuilt -f Dockerfile -t "$image" \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" "$ctx" >/dev/null

got=$(docker run --rm --entrypoint sh "$image" -c 'id -u; ferrokv --version')
case $got in
  10001*ferrokv*) ;;
  *) echo "smoke test failed: $got" >&2; exit 1 ;;
esac
docker image inspect --format '{{.Size}}' "$image" | awk -v t="$image" -v s=$((SECONDS - start)) \
  -v v="$(echo "$got" | tail -n 1)" '{ printf "built %s (%s, %.0f MB) in %ds\n", t, v, $1 / 1e6, s }'
