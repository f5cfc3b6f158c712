#!/usr/bin/env bash
# Checks deploy/monitoring against real things:
#   promtool check config / check rules / test rules (alert unit tests), then
#   scripts/monitoring_test.py: a real 3-node cluster and a real Prometheus on loopback, every
#   dashboard query must return data, promtool check metrics on every node's /metrics.
# Installs prometheus (for prometheus and promtool) from apt when missing; builds the release
# binary when needed (honours CARGO_TARGET_DIR, or FERROKV_BIN=/path). Extra arguments go to
# monitoring_test.py (--strict, --keep, --traffic-seconds N, --render PNG; PYTHON=... picks the
# interpreter, e.g. one with matplotlib for --render).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
. scripts/lib/binary.sh

start=$SECONDS
ensure_commands prometheus:prometheus promtool:prometheus python3:python3
bin=$(ferrokv_binary)

echo "== promtool check config"
promtool check config deploy/monitoring/prometheus/prometheus.yml
echo "== promtool check rules"
promtool check rules deploy/monitoring/prometheus/alerts.yml
echo "== promtool test rules"
(cd deploy/monitoring/prometheus && promtool test rules alerts_test.yml)

echo "== dashboards and metrics against a live cluster"
timeout 300 "${PYTHON:-python3}" scripts/monitoring_test.py --ferrokv "$bin" "$@"
echo "monitoring checks passed in $((SECONDS - start))s"
