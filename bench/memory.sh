#!/usr/bin/env bash
# Resident memory per key of one ferrokv node.
#
# Starts a single-node ferrokv (`ferrokv serve` with itself as the only
# member) on loopback with a temporary data directory, reads VmRSS from
# /proc/<pid>/status once it is ready, writes every key bench/<i>, i < KEYS,
# once with `ferrokv bench`'s prefill (VALUE_SIZE-byte values), waits for the
# node to settle and reads VmRSS (and the peak VmHWM) again. Reports
# (RSS loaded - RSS empty) / KEYS against the raw key + value bytes, writes
# bench/results/memory-<date>.json and the generated section of
# docs/benchmarks.md. Everything is stopped and removed on exit.
#
# Usage: bench/memory.sh [options]
#   --keys N            keys to write (default 1000000)
#   --value-size B      bytes per value (default 100)
#   --fsync POLICY      ferrokv --fsync (default never: memory does not depend
#                       on it and loading is faster)
#   --concurrency N     writers (default 64)
#   --quick             100000 keys, to validate the script
#   --ferrokv PATH      ferrokv binary (default: target dir release build)
#   --no-doc            do not update docs/benchmarks.md
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEYS=1000000
VALUE_SIZE=100
FSYNC=never
CONC=64
FERROKV=${FERROKV_BIN:-}
DOC="$ROOT/docs/benchmarks.md"
QUICK=0
ARGS_ORIG="$*"
HTTP=18181
GRPC=19181

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --keys) KEYS=$2; shift 2 ;;
    --value-size) VALUE_SIZE=$2; shift 2 ;;
    --fsync) FSYNC=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --quick) QUICK=1; KEYS=100000; shift ;;
    --ferrokv) FERROKV=$2; shift 2 ;;
    --no-doc) DOC=""; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ $KEYS =~ ^[0-9]+$ && $KEYS -ge 1 ]] || die "--keys must be >= 1"
command -v jq >/dev/null || die "jq is needed"
command -v curl >/dev/null || die "curl is needed"

find_ferrokv

PID=""
BASE=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/ferrokv-memory.XXXXXX")
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $PID ]]; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
    wait 2>/dev/null || true
  fi
  [[ $rc != 0 && -f $BASE/node.log ]] && tail -n 10 "$BASE/node.log" >&2
  rm -rf "$BASE"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for p in $HTTP $GRPC; do
  ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || die "port $p is in use"
done

rss_kib() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$PID/status"; }
metric() { curl -sf -m 2 "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 ~ "^"m {print $2; exit}'; }

"$FERROKV" serve --node-id 1 --http-addr "127.0.0.1:$HTTP" --grpc-addr "127.0.0.1:$GRPC" \
  --data-dir "$BASE/node" --initial-members "1=127.0.0.1:$GRPC" --fsync "$FSYNC" \
  >"$BASE/node.log" 2>&1 &
PID=$!
deadline=$((SECONDS + 60))
until curl -sf -m 1 "http://127.0.0.1:$HTTP/readyz" >/dev/null 2>&1; do
  ((SECONDS < deadline)) || die "node not ready after 60 s"
  kill -0 "$PID" 2>/dev/null || die "node exited"
  sleep 0.2
done
sleep 1
RSS0=$(rss_kib VmRSS)
log "node ready, pid $PID, VmRSS $RSS0 KiB; writing $KEYS keys of $VALUE_SIZE bytes"

# The prefill writes every key exactly once; --ops 1 then ends the run.
start=$SECONDS
timeout 3600 "$FERROKV" bench --endpoint "http://127.0.0.1:$HTTP" --concurrency "$CONC" \
  --keys "$KEYS" --value-size "$VALUE_SIZE" --mix get=1 --ops 1 --warmup 0 --json \
  >"$BASE/bench.json" 2>"$BASE/bench.err" || die "load failed: $(tail -n 3 "$BASE/bench.err")"
LOAD_SECS=$((SECONDS - start))
PREFILL=$(jq -r '.prefill_secs' "$BASE/bench.json")

# Let snapshots triggered by the load finish, then sample a few times.
sleep 5
RSS1=$(rss_kib VmRSS); sleep 2
r=$(rss_kib VmRSS); ((r > RSS1)) && RSS1=$r; sleep 2
r=$(rss_kib VmRSS); ((r > RSS1)) && RSS1=$r
HWM=$(rss_kib VmHWM)
NKEYS=$(metric ferrokv_keys || true)
[[ -n $NKEYS ]] || NKEYS="?"

LAST=$((KEYS - 1))
KEYLEN=$((6 + ${#LAST}))  # "bench/" + zero-padded width of KEYS-1
RAW=$((KEYLEN + VALUE_SIZE))

mkdir -p "$ROOT/bench/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
suffix=""
if [[ $QUICK == 1 ]]; then suffix="-quick"; fi
out="$ROOT/bench/results/memory-$stamp$suffix.json"
jq -n --arg cmd "bench/memory.sh${ARGS_ORIG:+ $ARGS_ORIG}" --arg date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  --arg fk "$("$FERROKV" --version) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))" \
  --arg kernel "$(uname -sr)" --arg fsync "$FSYNC" --arg nkeys "$NKEYS" \
  --argjson keys "$KEYS" --argjson value_size "$VALUE_SIZE" --argjson key_len "$KEYLEN" \
  --argjson rss0 "$RSS0" --argjson rss1 "$RSS1" --argjson hwm "$HWM" \
  --argjson load_secs "$LOAD_SECS" --argjson prefill "$PREFILL" '
  {command: $cmd, date: $date, ferrokv: $fk, kernel: $kernel, fsync: $fsync,
   keys: $keys, keys_reported_by_node: $nkeys, value_size: $value_size, key_len: $key_len,
   raw_bytes_per_key: ($key_len + $value_size),
   rss_empty_kib: $rss0, rss_loaded_kib: $rss1, peak_rss_kib: $hwm,
   bytes_per_key: (($rss1 - $rss0) * 1024 / $keys),
   bytes_per_key_total_rss: ($rss1 * 1024 / $keys),
   peak_bytes_per_key: ($hwm * 1024 / $keys),
   ratio_to_raw: ((($rss1 - $rss0) * 1024 / $keys) / ($key_len + $value_size)),
   load_secs: $load_secs, prefill_secs: $prefill}' >"$out"
cat "$out"

section=$(jq -r '
  "Generated by `\(.command)` on \(.date) (\(.ferrokv), \(.kernel), --fsync \(.fsync)).\n\n" +
  "| | |\n|---|---:|\n" +
  "| keys written (node reports) | \(.keys) (\(.keys_reported_by_node)) |\n" +
  "| raw bytes per key (\(.key_len)-byte key + \(.value_size)-byte value) | \(.raw_bytes_per_key) |\n" +
  "| VmRSS empty / loaded / peak (VmHWM) | \(.rss_empty_kib / 1024 | floor) / \(.rss_loaded_kib / 1024 | floor) / \(.peak_rss_kib / 1024 | floor) MiB |\n" +
  "| resident bytes per key, (loaded - empty) / keys | \(.bytes_per_key | floor) |\n" +
  "| ratio to raw bytes | \(.ratio_to_raw * 100 | floor / 100)× (goal ≤ 2×: \(if .ratio_to_raw <= 2 then "met" else "**missed**" end)) |\n" +
  "| peak resident bytes per key (VmHWM / keys) | \(.peak_bytes_per_key | floor) |\n" +
  "| load time | \(.load_secs) s |"' "$out")
echo "$section"
if [[ -n $DOC ]]; then
  python3 - "$DOC" "$section" <<'EOF'
import sys
path, body = sys.argv[1], sys.argv[2]
begin, end = "<!-- memory:begin -->", "<!-- memory:end -->"
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmarks\n"
if begin in text and end in text:
    text = text[: text.index(begin) + len(begin)] + "\n" + body + "\n" + text[text.index(end):]
else:
    text += "\n%s\n%s\n%s\n" % (begin, body, end)
open(path, "w").write(text)
EOF
  log "updated $DOC"
fi
