#!/usr/bin/env bash
# The test command: formatting, lints, every unit, multi-node and fault-injection test, the
# benchmark scripts' Python helpers, then the monitoring checks and the container test.
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

echo "== bench tools: unit tests of the comparison's Python helpers"
python3 -m unittest discover -s bench -p 'test_*.py'

# The binary the tests above built: the scripts below reuse it instead of building again.
export FERROKV_BIN="${FERROKV_BIN:-$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/ferrokv}"

echo "== monitoring: promtool checks, dashboards' queries against a real Prometheus"
./scripts/monitoring-test.sh

echo "== containers: image, docker compose cluster, leader kill, disconnect"
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ./scripts/container-test.sh
elif [ -n "${CI:-}" ]; then
  echo "docker is needed for the container test in CI" >&2
  exit 1
else
  echo "SKIPPED: no usable docker engine (CI runs this test)"
fi
