#!/usr/bin/env bash
# The test command: formatting, lints, then every unit and multi-node test.
# Honours CARGO_TARGET_DIR (a warm build directory makes this much faster).
set -euo pipefail
cd "$(dirname "$0")/.."

# The fault-injection suite needs `ip` (network namespaces) and `nft`; install them if missing.
if [ "$(id -u)" = 0 ] && { ! command -v nft >/dev/null || ! command -v ip >/dev/null; }; then
  echo "== installing iproute2 and nftables"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 nftables
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --locked -- -D warnings

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --release --workspace --locked --no-fail-fast
else
  echo "(cargo-nextest not found: using cargo test)"
  cargo test --release --workspace --locked --no-fail-fast
fi
