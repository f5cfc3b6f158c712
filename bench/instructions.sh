#!/usr/bin/env bash
# Count the instructions a write costs, with valgrind's callgrind.
#
# Wall-clock figures on a shared 2-core VM move by ±20 % from run to run;
# instruction counts do not depend on what the neighbours do, so a change
# worth a few percent shows here when it cannot show in bench/compare.sh.
# Starts 1 or 3 nodes on loopback, each under callgrind with instrumentation
# off, writes every key once (not counted), turns instrumentation on, sends a
# fixed number of writes with `ferrokv bench` (run natively), dumps the counts
# and prints the instructions per write of each node and of all of them.
# Data under a temporary directory, removed on exit with every process
# started. Counts from the same binary and options agree within about 1 % at
# one client; with several clients the batches depend on timing under
# valgrind's slowdown, so compare those over repeats.
#
# Usage: bench/instructions.sh [options] [BINARY...]
#   BINARY...             ferrokv binaries to measure one after the other
#                         (default: the target dir's release build)
#   --nodes 1|3           cluster size (default 1: the leader's own path)
#   --clients N           concurrent writers (default 1)
#   --ops N               measured writes (default 2000)
#   --keep DIR            keep the callgrind files under DIR (for callgrind_annotate)
#   --no-install          do not apt-get install valgrind when missing
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODES=1
CLIENTS=1
OPS=2000
KEEP=""
INSTALL=1
BINS=()
HTTP=(18381 18382 18383)
GRPC=(19381 19382 19383)

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --ops) OPS=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) BINS+=("$1"); shift ;;
  esac
done
[[ $NODES == 1 || $NODES == 3 ]] || die "--nodes must be 1 or 3"
[[ $CLIENTS =~ ^[0-9]+$ && $CLIENTS -ge 1 ]] || die "--clients must be >= 1"
[[ $OPS =~ ^[0-9]+$ && $OPS -ge 100 ]] || die "--ops must be >= 100"
if ((${#BINS[@]} == 0)); then
  FERROKV=""
  find_ferrokv
  BINS=("$FERROKV")
fi
for b in "${BINS[@]}"; do [[ -x $b ]] || die "not an executable: $b"; done

missing=()
command -v callgrind_control >/dev/null || missing+=(valgrind)
command -v jq >/dev/null || missing+=(jq)
install_missing "$INSTALL" "${missing[@]}"

BASE=$(mktemp -d "${TMPDIR:-/var/tmp}/ferrokv-instr.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$BASE"
}
trap cleanup EXIT

# measure BINARY RUN-DIR: prints "node<i> <instructions per write>" lines and the total.
measure() {
  local bin=$1 dir=$2 members="" i leader=""
  mkdir -p "$dir"
  for ((i = 0; i < NODES; i++)); do members+="$((i + 1))=127.0.0.1:${GRPC[$i]},"; done
  PIDS=()
  for ((i = 0; i < NODES; i++)); do
    # Long election timeouts: under valgrind a node runs tens of times slower.
    valgrind --tool=callgrind --instr-atstart=no --dump-instr=no \
      --callgrind-out-file="$dir/callgrind.node$((i + 1))" \
      "$bin" serve --node-id $((i + 1)) --http-addr "127.0.0.1:${HTTP[$i]}" --grpc-addr "127.0.0.1:${GRPC[$i]}" \
      --data-dir "$dir/data$((i + 1))" --initial-members "${members%,}" --fsync always --worker-threads 1 \
      --election-timeout-ms 3000 --heartbeat-ms 500 >"$dir/node$((i + 1)).log" 2>&1 &
    PIDS+=($!)
  done
  for _ in $(seq 240); do
    leader=$(curl -sf -m 2 "http://127.0.0.1:${HTTP[0]}/v1/cluster" | jq -r '.members[] | select(.is_leader) | .http_addr' 2>/dev/null || true)
    [[ -n $leader && $leader != null ]] && break
    sleep 0.5
  done
  [[ -n $leader && $leader != null ]] || die "no leader within 120 s (logs in $dir)"
  local load=("$bin" bench --endpoint "http://$leader" --keys 10000 --value-size 256 --mix put=1 --no-prefill --warmup 0)
  "${load[@]}" --concurrency 8 --ops 10000 --seed 1 >/dev/null || die "filling the keys failed"
  for p in "${PIDS[@]}"; do callgrind_control -i on "$p" >/dev/null 2>&1; done
  "${load[@]}" --concurrency "$CLIENTS" --ops "$OPS" --seed 2 --json --max-error-rate 0 >"$dir/bench.json" \
    || die "the measured writes failed (see $dir/bench.json)"
  for p in "${PIDS[@]}"; do
    callgrind_control -d "$p" >/dev/null 2>&1
    callgrind_control -i off "$p" >/dev/null 2>&1
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
  local total=0 n role
  for ((i = 1; i <= NODES; i++)); do
    n=$(awk '/^summary:/ { print $2; exit }' "$dir/callgrind.node$i.1")
    [[ -n $n ]] || die "no counts from node $i"
    role=follower
    [[ $leader == "127.0.0.1:${HTTP[$((i - 1))]}" ]] && role=leader
    printf '  node%d (%s): %d instructions per write\n' "$i" "$role" $((n / OPS))
    total=$((total + n))
  done
  printf '  all nodes: %d instructions per write (%d writes, %d clients, %d node(s))\n' \
    $((total / OPS)) "$OPS" "$CLIENTS" "$NODES"
}

k=0
for b in "${BINS[@]}"; do
  k=$((k + 1))
  log "measuring $b"
  echo "$b"
  measure "$b" "$BASE/run$k"
  if [[ -n $KEEP ]]; then
    mkdir -p "$KEEP/run$k"
    cp "$BASE/run$k"/callgrind.node*.1 "$KEEP/run$k/"
  fi
done
