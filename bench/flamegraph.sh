#!/usr/bin/env bash
# Profile the ferrokv leader under load and draw a flame graph.
#
# Starts a 3-node ferrokv cluster on loopback (data under a temporary
# directory, removed on exit with every process started), fills 10k keys,
# drives one workload at the leader with wrk (bench/wrk/kv.lua, as
# bench/compare.sh does), samples the leader's CPU with `perf record
# --call-graph dwarf`, folds the stacks with inferno and writes an SVG. Also
# prints where the leader's CPU went by component (HTTP, WAL, Raft core,
# replication, state machine, other) and the CPU per operation of all nodes.
# Each node runs with --worker-threads cores/3 (at least 1), as in
# bench/compare.sh; FERROKV_WORKER_THREADS=N in the environment overrides it.
#
# Usage: bench/flamegraph.sh [options]
#   --workload put|get|stale|mix  (default put)
#   --clients N                   concurrent keep-alive connections (default 64)
#   --duration SECS               measured seconds (default 8; sampled: all but the first and last second)
#   --frequency HZ                perf sampling frequency (default 499)
#   --fsync always|never          ferrokv --fsync (default always)
#   --out FILE                    SVG to write (default docs/img/flame-<workload>-leader.svg)
#   --ferrokv PATH                ferrokv binary (default: target dir release build)
#   --no-install                  do not apt-get/cargo install missing tools
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKLOAD=put
CLIENTS=64
DURATION=8
FREQ=499
FSYNC=always
OUT=""
FERROKV=${FERROKV_BIN:-}
INSTALL=1
# The three nodes share the machine's cores, as in bench/compare.sh.
WORKERS=${FERROKV_WORKER_THREADS:-$(($(nproc) / 3 > 0 ? $(nproc) / 3 : 1))}
HTTP=(18281 18282 18283)
GRPC=(19281 19282 19283)

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --workload) WORKLOAD=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --frequency) FREQ=$2; shift 2 ;;
    --fsync) FSYNC=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --ferrokv) FERROKV=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ $WORKLOAD =~ ^(put|get|stale|mix)$ ]] || die "--workload must be put, get, stale or mix"
[[ $CLIENTS =~ ^[0-9]+$ && $CLIENTS -ge 1 ]] || die "--clients must be >= 1"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 3 ]] || die "--duration must be whole seconds >= 3"
[[ $FSYNC == always || $FSYNC == never ]] || die "--fsync must be always or never"
OUT=${OUT:-$ROOT/docs/img/flame-$WORKLOAD-leader.svg}

find_ferrokv

missing=()
command -v perf >/dev/null || missing+=(linux-perf)
command -v wrk >/dev/null || missing+=(wrk)
command -v jq >/dev/null || missing+=(jq)
install_missing "$INSTALL" "${missing[@]}"
INFERNO=${CARGO_HOME:-$HOME/.cargo}/bin
if ! command -v inferno-flamegraph >/dev/null && [[ ! -x $INFERNO/inferno-flamegraph ]]; then
  ((INSTALL)) || die "missing: inferno (cargo install inferno)"
  log "installing inferno (cargo install)"
  cargo install --quiet --locked inferno
fi
PATH=$PATH:$INFERNO

BASE=$(mktemp -d "${TMPDIR:-/var/tmp}/ferrokv-flame.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$BASE"
}
trap cleanup EXIT

members="1=127.0.0.1:${GRPC[0]},2=127.0.0.1:${GRPC[1]},3=127.0.0.1:${GRPC[2]}"
for i in 0 1 2; do
  "$FERROKV" serve --node-id $((i + 1)) --http-addr "127.0.0.1:${HTTP[$i]}" --grpc-addr "127.0.0.1:${GRPC[$i]}" \
    --data-dir "$BASE/n$((i + 1))" --initial-members "$members" --fsync "$FSYNC" \
    --worker-threads "$WORKERS" >"$BASE/n$((i + 1)).log" 2>&1 &
  PIDS+=($!)
done
leader=""
for _ in $(seq 150); do
  leader=$(curl -sf -m 1 "http://127.0.0.1:${HTTP[0]}/v1/cluster" | jq -r '.members[] | select(.is_leader) | .http_addr' 2>/dev/null || true)
  [[ -n $leader && $leader != null ]] && break
  sleep 0.2
done
[[ -n $leader && $leader != null ]] || die "no leader within 30 s (logs in $BASE)"
port=${leader##*:}
LPID=""
for i in 0 1 2; do [[ ${HTTP[$i]} == "$port" ]] && LPID=${PIDS[$i]}; done
[[ -n $LPID ]] || die "leader $leader is not one of ours"
log "leader $leader (pid $LPID); filling 10000 keys"
# Every key, once (as bench/compare.sh does): reads of missing keys would be cheap 404s.
python3 "$ROOT/bench/kvtool.py" fill --system ferrokv --url "http://$leader" --keys 10000 --value-size 256 >/dev/null

cpu_ticks() { cat "${@/#//proc/}" 2>/dev/null | awk '{ s += $14 + $15 } END { print s }'; }
stat_files=()
for p in "${PIDS[@]}"; do stat_files+=("$p/stat"); done

threads=$((CLIENTS < 2 ? CLIENTS : 2))
log "wrk: $WORKLOAD, $CLIENTS clients, ${DURATION} s; perf at ${FREQ} Hz on the leader"
(sleep 1; perf record -q -e cpu-clock -F "$FREQ" --call-graph dwarf,32768 -p "$LPID" -o "$BASE/perf.data" \
  -- sleep $((DURATION - 2)) >/dev/null 2>&1) &
perf_job=$!
t0=$(cpu_ticks "${stat_files[@]}")
out=$(KV_SYSTEM=ferrokv KV_OP=$WORKLOAD wrk -t "$threads" -c "$CLIENTS" -d "${DURATION}s" --timeout 10s \
  -s "$ROOT/bench/wrk/kv.lua" "http://$leader" 2>&1) || die "wrk failed: $out"
t1=$(cpu_ticks "${stat_files[@]}")
wait "$perf_job" || die "perf record failed (is perf allowed here? see /proc/sys/kernel/perf_event_paranoid)"
j=$(grep '^WRKJSON ' <<<"$out" | sed 's/^WRKJSON //')
[[ -n $j ]] || die "no result from wrk: $out"
ops=$(jq '.requests' <<<"$j")
hz=$(getconf CLK_TCK)
jq -r --argjson d "$DURATION" --argjson cpu "$((t1 - t0))" --argjson hz "$hz" \
  '"throughput \(.requests / $d | floor) ops/s, p50 \(.latency_us.p50 / 1000) ms, p99 \(.latency_us.p99 / 1000) ms; errors \(.errors.status + .errors.timeout + .errors.read); CPU of all three nodes \($cpu / $hz / .requests * 1e6 | floor) µs per operation"' <<<"$j"
((ops > 0)) || die "no operation succeeded"

log "folding stacks (perf script takes a while)"
perf script -i "$BASE/perf.data" 2>/dev/null | inferno-collapse-perf >"$BASE/stacks.folded"
[[ -s $BASE/stacks.folded ]] || die "no samples collected"
mkdir -p "$(dirname "$OUT")"
inferno-flamegraph --minwidth 0.3 --width 1400 \
  --title "ferrokv leader, $CLIENTS clients, $WORKLOAD (256 B values, fsync $FSYNC): where the CPU goes" \
  <"$BASE/stacks.folded" >"$OUT"
python3 "$ROOT/bench/stack_buckets.py" "$BASE/stacks.folded"
log "flame graph: $OUT"
