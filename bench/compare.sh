#!/usr/bin/env bash
# Compare ferrokv with etcd (and, as a reference point, Redis) on loopback.
#
# Starts a 3-node ferrokv cluster, a 3-member etcd cluster and one Redis, all
# on 127.0.0.1 with their own ports and data under one temporary directory,
# then drives the same HTTP workloads against ferrokv and etcd with wrk
# (bench/wrk/kv.lua: keep-alive, closed loop, uniformly random keys) and
# SET/GET against Redis with redis-benchmark. Cells are interleaved: every
# (workload, clients) cell runs ferrokv, etcd and Redis back to back, so
# background load on a shared machine hits all systems alike. The ferrokv
# nodes share the cores: --worker-threads cores/3 each (at least 1;
# FERROKV_WORKER_THREADS=N overrides); etcd runs with Go's default.
#
# Writes bench/results/compare-<date>-<mode>.{json,csv} and the generated
# sections of docs/benchmarks.md. Everything is stopped and removed on exit.
#
# Usage: bench/compare.sh [options]
#   --duration SECS     measured seconds per cell (default 10)
#   --quick             3 s cells, no warm-up: to validate the script
#   --repeat N          run every cell N times, report median and min–max (default 1)
#   --mode fsync|tmpfs  fsync (default): data on disk, ferrokv --fsync always,
#                       etcd default (fsyncs its WAL). tmpfs: data in /dev/shm,
#                       ferrokv --fsync never, etcd on tmpfs (etcd 3.4 has no
#                       --unsafe-no-fsync, tmpfs makes its fsyncs near-free)
#   --concurrency LIST  clients per cell, e.g. "1 16 64" (default)
#   --workloads LIST    subset of "put get stale mix" (default: all)
#   --spread            spread each cell's connections over all three members of
#                       ferrokv and of etcd (one wrk per member, clients split
#                       as evenly as possible) instead of sending them all to
#                       the leader: what clients behind a load balancer do.
#                       Throughput is the sum over members; the latency columns
#                       are the worst member's percentile. Results go to
#                       compare-<date>-<mode>-spread.*; no cross-check, and
#                       the doc is not updated.
#   --no-redis          skip Redis
#   --no-cross-check    skip the ferrokv bench vs wrk cross-check
#   --ferrokv PATH      ferrokv binary (default: target dir release build)
#   --no-doc            do not update docs/benchmarks.md
#   --no-install        do not apt-get install missing tools
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=10
WARMUP=1
REPEAT=1
MODE=fsync
CONCS="1 16 64"
WORKLOADS="put get stale mix"
KEYS=10000
VALUE_SIZE=256
REDIS=1
CROSS=1
DOC="$ROOT/docs/benchmarks.md"
INSTALL=1
FERROKV=${FERROKV_BIN:-}
QUICK=0
SPREAD=0
ARGS_ORIG="$*"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --quick) QUICK=1; DURATION=3; WARMUP=0; shift ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    --concurrency) CONCS=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --spread) SPREAD=1; DOC=""; CROSS=0; shift ;;
    --no-redis) REDIS=0; shift ;;
    --no-cross-check) CROSS=0; shift ;;
    --ferrokv) FERROKV=$2; shift 2 ;;
    --no-doc) DOC=""; shift ;;
    --no-install) INSTALL=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 ]] || die "--duration must be whole seconds >= 1"
[[ $REPEAT =~ ^[0-9]+$ && $REPEAT -ge 1 ]] || die "--repeat must be >= 1"
[[ $MODE == fsync || $MODE == tmpfs ]] || die "--mode must be fsync or tmpfs"
for c in $CONCS; do [[ $c =~ ^[0-9]+$ && $c -ge 1 ]] || die "bad concurrency $c"; done
for w in $WORKLOADS; do [[ $w =~ ^(put|get|stale|mix)$ ]] || die "bad workload $w"; done

# ------------------------------------------------------------------ tools

ensure_tools() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v etcdctl >/dev/null || missing+=(etcd-client)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-benchmark >/dev/null || missing+=(redis-tools)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v jq >/dev/null || missing+=(jq)
  command -v curl >/dev/null || missing+=(curl)
  [[ -x /usr/bin/time ]] || missing+=(time)
  install_missing "$INSTALL" "${missing[@]}"
  command -v python3 >/dev/null || die "python3 is needed for bench/kvtool.py"
  # Debian's postinst may have started system instances (when systemd runs):
  # stop them so they use no CPU during the measurements. Ours use other ports.
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    for s in etcd redis-server; do
      if systemctl is-active --quiet "$s" 2>/dev/null; then
        log "stopping and disabling the system $s service"
        systemctl stop "$s" || true
        systemctl disable "$s" >/dev/null 2>&1 || true
      fi
    done
  fi
}

# ------------------------------------------------------------------ processes

PIDS=()
BASE=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ ${#PIDS[@]} -gt 0 ]]; then
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
      local alive=0
      for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      [[ $alive == 0 ]] && break
      sleep 0.1
    done
    kill -KILL "${PIDS[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
  fi
  if [[ -n $BASE && -d $BASE ]]; then
    if [[ $rc != 0 && -z ${KEEP_LOGS_ON_FAILURE:-} ]]; then
      for f in "$BASE"/*.log; do [[ -f $f ]] && { echo "--- tail of $f" >&2; tail -n 5 "$f" >&2; }; done
    fi
    rm -rf "$BASE"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until SECS DESCRIPTION CMD...: poll CMD every 0.2 s, fail after SECS.
wait_until() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

FK_HTTP=(18081 18082 18083)
FK_GRPC=(19081 19082 19083)
ETCD_CLIENT=(12379 12479 12579)
ETCD_PEER=(12380 12480 12580)
REDIS_PORT=16379

# The three nodes share this machine's cores: each gets an equal share of
# worker threads (as `ferrokv dev` does), at least one. etcd keeps its default
# (GOMAXPROCS = all cores), which gave it more throughput at 64 clients here.
FK_WORKERS=${FERROKV_WORKER_THREADS:-$(($(nproc) / 3 > 0 ? $(nproc) / 3 : 1))}

start_ferrokv() {
  local fsync=always
  [[ $MODE == tmpfs ]] && fsync=never
  local members="1=127.0.0.1:${FK_GRPC[0]},2=127.0.0.1:${FK_GRPC[1]},3=127.0.0.1:${FK_GRPC[2]}"
  for i in 0 1 2; do
    "$FERROKV" serve --node-id $((i + 1)) \
      --http-addr "127.0.0.1:${FK_HTTP[$i]}" --grpc-addr "127.0.0.1:${FK_GRPC[$i]}" \
      --data-dir "$BASE/ferrokv-$((i + 1))" --initial-members "$members" \
      --fsync "$fsync" --worker-threads "$FK_WORKERS" >"$BASE/ferrokv-$((i + 1)).log" 2>&1 &
    PIDS+=($!)
    FK_PIDS+=($!)
  done
  for p in "${FK_HTTP[@]}"; do
    wait_until 60 "ferrokv on :$p to be ready" curl -sf -m 1 "http://127.0.0.1:$p/readyz"
  done
  wait_until 30 "a ferrokv leader" fk_leader_url
  FK_URL=$(fk_leader_url)
  log "ferrokv ready, leader $FK_URL"
}

fk_leader_url() {
  local c leader
  c=$(curl -sf -m 1 "http://127.0.0.1:${FK_HTTP[0]}/v1/cluster") || return 1
  leader=$(jq -r '.members[] | select(.is_leader) | .http_addr' <<<"$c")
  [[ -n $leader && $leader != null ]] || return 1
  echo "http://$leader"
}

start_etcd() {
  local cluster="e1=http://127.0.0.1:${ETCD_PEER[0]},e2=http://127.0.0.1:${ETCD_PEER[1]},e3=http://127.0.0.1:${ETCD_PEER[2]}"
  for i in 0 1 2; do
    local n=$((i + 1))
    ETCD_UNSUPPORTED_ARCH=${ETCD_UNSUPPORTED_ARCH:-} etcd --name "e$n" --data-dir "$BASE/etcd-$n" \
      --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${ETCD_PEER[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER[$i]}" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token ferrokv-compare \
      --logger zap --log-outputs stderr --log-level warn \
      >"$BASE/etcd-$n.log" 2>&1 &
    PIDS+=($!)
    ETCD_PIDS+=($!)
  done
  for p in "${ETCD_CLIENT[@]}"; do
    wait_until 60 "etcd on :$p to be healthy" etcd_healthy "$p"
  done
  wait_until 30 "an etcd leader" etcd_leader_url
  ETCD_URL=$(etcd_leader_url)
  log "etcd ready, leader $ETCD_URL"
}

etcd_healthy() { curl -sf -m 1 "http://127.0.0.1:$1/health" | grep -q '"health":"true"'; }

etcd_leader_url() {
  local eps s
  eps=$(printf 'http://127.0.0.1:%s,' "${ETCD_CLIENT[@]}")
  s=$(ETCDCTL_API=3 etcdctl --endpoints="${eps%,}" --command-timeout=2s endpoint status -w json) || return 1
  jq -er '.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint' <<<"$s" | head -n1 | grep .
}

start_redis() {
  mkdir -p "$BASE/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$BASE/redis" --daemonize no --protected-mode yes >"$BASE/redis.log" 2>&1 &
  PIDS+=($!)
  REDIS_PIDS+=($!)
  wait_until 30 "redis" redis-cli -p "$REDIS_PORT" ping
  log "redis ready on :$REDIS_PORT"
}

# ------------------------------------------------------------------ runs

RUNS=""   # JSONL file with one object per measured run

# The server processes of each system, whose CPU time a run charges to its operations.
FK_PIDS=()
ETCD_PIDS=()
REDIS_PIDS=()
CLK_TCK=$(getconf CLK_TCK)

# server_ticks SYSTEM: user + system CPU ticks used so far by the servers that SYSTEM's
# runs load (the cross-check's generators load ferrokv).
server_ticks() {
  local pids=()
  case "$1" in
    etcd) pids=("${ETCD_PIDS[@]}") ;;
    redis) pids=("${REDIS_PIDS[@]}") ;;
    *) pids=("${FK_PIDS[@]}") ;;
  esac
  # Fields 14 and 15 of /proc/<pid>/stat; the command name (field 2) has no spaces here.
  local p t=0 f
  for p in "${pids[@]}"; do
    read -r -a f <"/proc/$p/stat" || die "server process $p of $1 is gone"
    t=$((t + f[13] + f[14]))
  done
  echo "$t"
}

# server_cpu_s SYSTEM TICKS-BEFORE: CPU seconds the servers used since TICKS-BEFORE.
server_cpu_s() {
  awk -v a="$2" -v b="$(server_ticks "$1")" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / hz }'
}

# run_wrk KIND SYSTEM URL OP CONC REPEAT [TOOL-LABEL]
run_wrk() {
  local kind=$1 system=$2 url=$3 op=$4 conc=$5 rep=$6 label=${7:-wrk}
  local threads=$((conc < 2 ? conc : 2)) out="$BASE/wrk.out" tf="$BASE/time.out"
  if [[ $WARMUP -gt 0 ]]; then
    KV_SYSTEM=$system KV_OP=$op KV_KEYS=$KEYS KV_VALUE_SIZE=$VALUE_SIZE \
      timeout $((WARMUP + 30)) wrk -t "$threads" -c "$conc" -d "${WARMUP}s" --timeout 10s \
      -s "$ROOT/bench/wrk/kv.lua" "$url" >/dev/null 2>&1 || true
  fi
  local t0
  t0=$(server_ticks "$system")
  KV_SYSTEM=$system KV_OP=$op KV_KEYS=$KEYS KV_VALUE_SIZE=$VALUE_SIZE \
    timeout $((DURATION + 30)) /usr/bin/time -f '%U %S' -o "$tf" \
    wrk -t "$threads" -c "$conc" -d "${DURATION}s" --timeout 10s \
    -s "$ROOT/bench/wrk/kv.lua" "$url" >"$out" 2>&1 || die "wrk failed: $(tail -n 3 "$out")"
  local j cpu scpu
  scpu=$(server_cpu_s "$system" "$t0")
  j=$(sed -n 's/^WRKJSON //p' "$out")
  [[ -n $j ]] || die "no WRKJSON in wrk output: $(tail -n 3 "$out")"
  cpu=$(awk '{print $1 + $2}' "$tf")
  jq -c --arg kind "$kind" --arg system "$system" --arg wl "$op" --argjson c "$conc" \
    --argjson rep "$rep" --arg tool "$label" --argjson cpu "$cpu" --argjson scpu "$scpu" '
    {kind: $kind, system: $system, workload: $wl, concurrency: $c, repeat: $rep, tool: $tool,
     requests: .requests, elapsed_s: (.duration_us / 1e6),
     ops_per_sec: (.requests / (.duration_us / 1e6)),
     p50_us: .latency_us.p50, p90_us: .latency_us.p90, p99_us: .latency_us.p99,
     max_us: .latency_us.max,
     errors: (.errors.connect + .errors.read + .errors.write + .errors.status + .errors.timeout),
     error_detail: .errors, generator_cpu_s: $cpu, server_cpu_s: $scpu}' <<<"$j" | tee -a "$RUNS" | summarize
}

# run_wrk_spread SYSTEM OP CONC REPEAT URL...: one wrk per URL at once, CONC
# clients split over them; throughput adds up, latency is the worst member's.
run_wrk_spread() {
  local system=$1 op=$2 conc=$3 rep=$4
  shift 4
  local urls=("$@") n=$# pids=() i
  local outs=() tfs=()
  for i in "${!urls[@]}"; do
    local ci=$((conc / n + (i < conc % n ? 1 : 0)))
    [[ $ci -gt 0 ]] || continue
    local out="$BASE/wrk.$i.out" tf="$BASE/time.$i.out"
    outs+=("$out"); tfs+=("$tf")
    (
      if [[ $WARMUP -gt 0 ]]; then
        KV_SYSTEM=$system KV_OP=$op KV_KEYS=$KEYS KV_VALUE_SIZE=$VALUE_SIZE \
          timeout $((WARMUP + 30)) wrk -t 1 -c "$ci" -d "${WARMUP}s" --timeout 10s \
          -s "$ROOT/bench/wrk/kv.lua" "${urls[$i]}" >/dev/null 2>&1 || true
      fi
      KV_SYSTEM=$system KV_OP=$op KV_KEYS=$KEYS KV_VALUE_SIZE=$VALUE_SIZE \
        timeout $((DURATION + 30)) /usr/bin/time -f '%U %S' -o "$tf" \
        wrk -t 1 -c "$ci" -d "${DURATION}s" --timeout 10s \
        -s "$ROOT/bench/wrk/kv.lua" "${urls[$i]}" >"$out" 2>&1
    ) &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || die "wrk failed: $(tail -n 3 "${outs[0]}")"; done
  # No server CPU here: the warm-ups run inside each member's subshell, within any window.
  local cpu
  cpu=$(cat "${tfs[@]}" | awk '{s += $1 + $2} END {print s}')
  sed -n 's/^WRKJSON //p' "${outs[@]}" | jq -sc --arg system "$system" --arg wl "$op" --argjson c "$conc" \
    --argjson rep "$rep" --argjson cpu "$cpu" --argjson members "${#outs[@]}" '
    if length != $members then error("a wrk printed no WRKJSON") else . end |
    {kind: "compare", system: $system, workload: $wl, concurrency: $c, repeat: $rep,
     tool: "wrk x \($members)", requests: (map(.requests) | add),
     elapsed_s: (map(.duration_us) | max / 1e6),
     ops_per_sec: (map(.requests / (.duration_us / 1e6)) | add),
     p50_us: (map(.latency_us.p50) | max), p90_us: (map(.latency_us.p90) | max),
     p99_us: (map(.latency_us.p99) | max), max_us: (map(.latency_us.max) | max),
     errors: (map(.errors.connect + .errors.read + .errors.write + .errors.status + .errors.timeout) | add),
     error_detail: map(.errors), generator_cpu_s: $cpu}' | tee -a "$RUNS" | summarize
}

# run_fkbench KIND CONC REPEAT: `ferrokv bench` writes against the leader.
run_fkbench() {
  local kind=$1 conc=$2 rep=$3 out="$BASE/bench.out" tf="$BASE/time.out"
  # `ferrokv bench` warms up and fills inside the same command: its server CPU is not recorded.
  timeout $((DURATION + WARMUP + 60)) /usr/bin/time -f '%U %S' -o "$tf" \
    "$FERROKV" bench --endpoint "$FK_URL" --concurrency "$conc" --duration "$DURATION" \
    --warmup "$WARMUP" --keys "$KEYS" --value-size "$VALUE_SIZE" --mix put=1 --json \
    >"$out" 2>"$BASE/bench.err" || die "ferrokv bench failed: $(tail -n 3 "$BASE/bench.err")"
  local cpu
  cpu=$(awk '{print $1 + $2}' "$tf")
  jq -c --arg kind "$kind" --argjson c "$conc" --argjson rep "$rep" --argjson cpu "$cpu" '
    {kind: $kind, system: "ferrokv bench", workload: "put", concurrency: $c, repeat: $rep,
     tool: "ferrokv bench", requests: .total.ops, elapsed_s: .elapsed_secs,
     ops_per_sec: .total.ops_per_sec,
     p50_us: .total.latency_us.p50, p90_us: .total.latency_us.p90,
     p99_us: .total.latency_us.p99, max_us: .total.latency_us.max,
     errors: .total.errors, generator_cpu_s: $cpu}' "$out" | tee -a "$RUNS" | summarize
}

# run_redis CMD CONC REPEAT: redis-benchmark is count-based, so a short
# calibration run sizes -n to last about DURATION seconds.
run_redis() {
  local cmd=$1 conc=$2 rep=$3 out="$BASE/redis.out" tf="$BASE/time.out"
  local common=(-h 127.0.0.1 -p "$REDIS_PORT" -t "$cmd" -d "$VALUE_SIZE" -r "$KEYS" -c "$conc" -P 1 -k 1 --csv)
  timeout 60 redis-benchmark "${common[@]}" -n 5000 >"$out" 2>/dev/null || die "redis-benchmark failed"
  local rps n
  rps=$(awk -F'","' 'NR > 1 {print $2}' "$out" | head -n1)
  n=$(awk -v r="$rps" -v d="$DURATION" 'BEGIN { n = int(r * d); if (n < 1000) n = 1000; print n }')
  local t0
  t0=$(server_ticks redis)
  timeout $((DURATION * 3 + 60)) /usr/bin/time -f '%U %S' -o "$tf" \
    redis-benchmark "${common[@]}" -n "$n" >"$out" 2>/dev/null || die "redis-benchmark failed"
  local cpu scpu
  scpu=$(server_cpu_s redis "$t0")
  cpu=$(awk '{print $1 + $2}' "$tf")
  # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  awk -F, 'NR == 2 { gsub(/"/, ""); print $2, $5, $6, $7, $8 }' "$out" | {
    read -r ops p50 p95 p99 max
    jq -nc --arg wl "$cmd" --argjson c "$conc" --argjson rep "$rep" --argjson n "$n" \
      --argjson ops "$ops" --argjson p50 "$p50" --argjson p99 "$p99" --argjson max "$max" \
      --argjson cpu "$cpu" --argjson scpu "$scpu" '
      {kind: "compare", system: "redis", workload: $wl, concurrency: $c, repeat: $rep,
       tool: "redis-benchmark", requests: $n, elapsed_s: ($n / $ops), ops_per_sec: $ops,
       p50_us: ($p50 * 1000), p90_us: null, p99_us: ($p99 * 1000), max_us: ($max * 1000),
       errors: 0, generator_cpu_s: $cpu, server_cpu_s: $scpu}'
  } | tee -a "$RUNS" | summarize
}

summarize() {
  jq -r '"  \(.system) \(.workload) c=\(.concurrency) #\(.repeat): \(.ops_per_sec | floor) ops/s p50 \(.p50_us / 1000) ms p99 \(.p99_us / 1000) ms errors \(.errors)"' >&2
}

# ------------------------------------------------------------------ main

ensure_tools
find_ferrokv

for p in "${FK_HTTP[@]}" "${FK_GRPC[@]}" "${ETCD_CLIENT[@]}" "${ETCD_PEER[@]}" $REDIS_PORT; do
  port_free "$p" || die "port $p is in use (another compare.sh?)"
done

if [[ $MODE == tmpfs ]]; then
  BASE=$(mktemp -d /dev/shm/ferrokv-compare.XXXXXX)
  DURABILITY="no fsync: ferrokv --fsync never; etcd 3.4 (no --unsafe-no-fsync flag) fsyncs, but to tmpfs, where fsync is nearly free; all data in tmpfs"
else
  BASE=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/ferrokv-compare.XXXXXX")
  DURABILITY="fsync: ferrokv --fsync always (fdatasync before acknowledging), etcd default (fsyncs its WAL before acknowledging); Redis has no persistence"
fi
MEDIUM="$(df -hT "$BASE" | awk 'NR == 2 {print $1 " (" $2 ")"}'), all systems in $BASE"
RUNS="$BASE/runs.jsonl"
: >"$RUNS"

log "data in $BASE ($MODE mode), ferrokv binary $FERROKV"
start_ferrokv
start_etcd
[[ $REDIS == 1 ]] && start_redis

log "pre-populating $KEYS keys of $VALUE_SIZE bytes"
python3 "$ROOT/bench/kvtool.py" fill --system ferrokv --url "$FK_URL" --keys "$KEYS" --value-size "$VALUE_SIZE"
python3 "$ROOT/bench/kvtool.py" fill --system etcd --url "$ETCD_URL" --keys "$KEYS" --value-size "$VALUE_SIZE"
if [[ $REDIS == 1 ]]; then
  # -r draws keys at random: 10 draws per key leave ~0.005% unwritten.
  timeout 120 redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -t set -d "$VALUE_SIZE" -r "$KEYS" \
    -n $((KEYS * 10)) -c 16 -q >/dev/null
fi

for rep in $(seq "$REPEAT"); do
  for wl in $WORKLOADS; do
    for c in $CONCS; do
      if [[ $SPREAD == 1 ]]; then
        run_wrk_spread ferrokv "$wl" "$c" "$rep" "${FK_HTTP[@]/#/http://127.0.0.1:}"
        run_wrk_spread etcd "$wl" "$c" "$rep" "${ETCD_CLIENT[@]/#/http://127.0.0.1:}"
      else
        run_wrk compare ferrokv "$FK_URL" "$wl" "$c" "$rep"
        run_wrk compare etcd "$ETCD_URL" "$wl" "$c" "$rep"
      fi
      if [[ $REDIS == 1 ]]; then
        case $wl in
          put) run_redis set "$c" "$rep" ;;
          get) run_redis get "$c" "$rep" ;;
        esac
      fi
    done
  done
done

if [[ $CROSS == 1 ]]; then
  log "cross-check: ferrokv bench vs wrk, writes"
  for rep in $(seq "$REPEAT"); do
    for c in 64 1; do
      run_fkbench crosscheck "$c" "$rep"
      run_wrk crosscheck wrk "$FK_URL" put "$c" "$rep"
    done
  done
fi

# ------------------------------------------------------------------ report

cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$ROOT/bench/results"
prefix="$ROOT/bench/results/compare-$stamp-$MODE"
[[ $SPREAD == 1 ]] && prefix+="-spread"
[[ $QUICK == 1 ]] && prefix+="-quick"
GENERATOR_TARGET="min(clients, 2) threads, all connections to the Raft leader of each system"
[[ $SPREAD == 1 ]] && GENERATOR_TARGET="connections spread over the three members of each system, one wrk (1 thread) per member; throughput summed, latency percentiles the worst member's"
jq -n --arg cmd "bench/compare.sh${ARGS_ORIG:+ $ARGS_ORIG}" --arg date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  --arg cpu "$cpu" --arg cores "$(nproc)" --arg memory "$mem" --arg kernel "$(uname -sr)" \
  --arg loadavg "$(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)" \
  --arg fk "$("$FERROKV" --version 2>/dev/null || echo '?') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))" \
  --arg etcd "$(etcd --version | head -n1 | sed 's/etcd Version: //')" \
  --arg redis "$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')" \
  --arg wrk "$(wrk -v 2>&1 | head -n1 | awk '{print $2}')" \
  --arg durability "$DURABILITY" --arg medium "$MEDIUM" \
  --arg threads "ferrokv --worker-threads $FK_WORKERS per node (3 nodes on $(nproc) cores); etcd GOMAXPROCS ${GOMAXPROCS:-default (all cores)}" \
  --arg duration "${DURATION} s measured$([[ $WARMUP -gt 0 ]] && echo " after ${WARMUP} s warm-up")$([[ $QUICK == 1 ]] && echo ' (--quick: for validating the script, not for conclusions)')" \
  --argjson duration_s "$DURATION" --arg repeat "$REPEAT" --argjson conc "[$(echo "$CONCS" | tr ' ' ',')]" \
  --arg workload "$KEYS keys (pre-populated), uniformly random, ${VALUE_SIZE}-byte values; ferrokv: PUT/GET /v1/kv/<key> (stale: ?consistency=stale); etcd: JSON gateway POST /v3/kv/put and /v3/kv/range (base64 key/value, serializable: true for stale)" \
  --arg generator "wrk $(wrk -v 2>&1 | head -n1 | awk '{print $2}') + bench/wrk/kv.lua, one keep-alive connection per client, closed loop, $GENERATOR_TARGET; same machine as the servers" \
  '{command: $cmd, date: $date, cpu: $cpu, cores: $cores, memory: $memory, kernel: $kernel,
    loadavg: $loadavg, ferrokv_version: $fk, etcd_version: $etcd, redis_version: $redis,
    wrk_version: $wrk, durability: $durability, threads: $threads, data_medium: $medium, duration: $duration,
    duration_s: $duration_s, repeat: $repeat, concurrency: $conc, workload: $workload,
    generator: $generator}' >"$BASE/meta.json"
python3 "$ROOT/bench/kvtool.py" report --runs "$RUNS" --meta "$BASE/meta.json" \
  --out-prefix "$prefix" ${DOC:+--doc "$DOC"}
log "raw results: $prefix.json $prefix.csv${DOC:+; updated $DOC}"
