#!/usr/bin/env bash
# End-to-end test of the container image and docker-compose.yml:
#   1. builds the image (scripts/image.sh: local base image, host binary, ferrokv:dev)
#   2. brings the compose cluster up under a unique project name (its own network and volumes)
#   3. CRUD through the published ports
#   4. kills the leader's container: writes go on through the other nodes and every acknowledged
#      write reads back; restarts it and checks it catches up
#   5. disconnects a follower's container from the network while writes go on, reconnects it and
#      checks it catches up (applied index, stale read of the last key)
#   Throughout 4 and 5 a background writer also writes through all three ports, so writes are in
#   flight when the leader dies; every write it got acknowledged must be on every node at the end.
#   6. tears everything down (compose down -v), always, also on failure or Ctrl-C
# Every wait is bounded. Exits non-zero on any failure. Needs root (or docker access) and docker.
#   FERROKV_IMAGE=ferrokv:dev   image to test      SKIP_IMAGE_BUILD=1   use the existing image
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh

start=$SECONDS
export FERROKV_IMAGE=${FERROKV_IMAGE:-ferrokv:dev}
project=ferrokvtest$$
command -v docker >/dev/null || { echo "docker is not installed" >&2; exit 1; }
ensure_commands curl:curl jq:jq python3:python3

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  ensure_commands docker-compose:docker-compose
  compose=(docker-compose)
fi
dc() { "${compose[@]}" -p "$project" -f docker-compose.yml "$@"; }

step() { echo "== [$((SECONDS - start))s] $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

work=$(mktemp -d /tmp/ferrokv-container-test.XXXXXX)
cleanup() {
  local rc=$?
  if [ -n "${bg_pid:-}" ]; then
    touch "$work/stop"
    kill "$bg_pid" 2>/dev/null || true
    wait "$bg_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -n "${project_up:-}" ]; then
    echo "--- compose ps and last log lines (exit $rc)"
    dc ps || true
    dc logs --no-color --tail 25 || true
  fi
  if [ -n "${project_up:-}" ]; then
    step "tearing down project $project"
    timeout 120 "${compose[@]}" -p "$project" -f docker-compose.yml down -v --remove-orphans --timeout 20 \
      >/dev/null 2>&1 || echo "warning: compose down failed" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. image
t=$SECONDS
if [ -z "${SKIP_IMAGE_BUILD:-}" ]; then
  step "building the image $FERROKV_IMAGE"
  scripts/image.sh
fi
docker image inspect "$FERROKV_IMAGE" >/dev/null || fail "image $FERROKV_IMAGE does not exist"
image_secs=$((SECONDS - t))

# --- 2. cluster
# Three free loopback ports for the nodes' published HTTP ports.
read -r p1 p2 p3 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks: s.close()')
export FERROKV_BIND=127.0.0.1 FERROKV_PORT_1=$p1 FERROKV_PORT_2=$p2 FERROKV_PORT_3=$p3
declare -A url=([1]=http://127.0.0.1:$p1 [2]=http://127.0.0.1:$p2 [3]=http://127.0.0.1:$p3)

step "compose up (project $project, ports $p1 $p2 $p3)"
t=$SECONDS
project_up=1
out=$(dc up -d --no-build node1 node2 node3 2>&1) || fail "compose up: $out"

cid() { dc ps -q "node$1"; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$(cid "$1")"; }
code() { curl -s -o /dev/null -w '%{http_code}' --max-time "${2:-3}" "$1" || true; }

# wait_until DESCRIPTION SECONDS COMMAND...: polls every 0.5s, at most SECONDS.
wait_until() {
  local what=$1 limit=$2 deadline=$((SECONDS + $2))
  shift 2
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${limit}s waiting for $what"
    sleep 0.5
  done
}
all_healthy() { local n; for n in 1 2 3; do [ "$(health "$n")" = healthy ] || return 1; done; }
ready() { [ "$(code "${url[$1]}/readyz")" = 200 ]; }

wait_until "3 healthy containers" 90 all_healthy
for n in 1 2 3; do ready "$n" || fail "node $n not ready on ${url[$n]}"; done
up_secs=$((SECONDS - t))
step "3 nodes healthy and ready in ${up_secs}s"

# --- 3. CRUD through the published ports
put() { curl -s -o /dev/null -w '%{http_code}' --max-time "${3:-8}" -X PUT --data-binary "$2" "$1" || true; }
get() { curl -s --max-time 8 -f "$1"; }

[ "$(put "${url[1]}/v1/kv/crud/a" one)" = 201 ] || fail "create crud/a via node 1"
[ "$(get "${url[2]}/v1/kv/crud/a")" = one ] || fail "read crud/a via node 2"
rev=$(curl -s --max-time 8 -D - -o /dev/null "${url[3]}/v1/kv/crud/a" | tr -d '\r' | sed -n 's/^[Ee][Tt]ag: //p')
[ -n "$rev" ] || fail "no ETag on GET crud/a"
[ "$(curl -s --max-time 8 -o /dev/null -w '%{http_code}' -X PUT -H "If-Match: $rev" --data-binary two "${url[3]}/v1/kv/crud/a")" = 200 ] ||
  fail "compare-and-set crud/a via node 3"
[ "$(curl -s --max-time 8 -o /dev/null -w '%{http_code}' -X PUT -H "If-Match: $rev" --data-binary three "${url[1]}/v1/kv/crud/a")" = 412 ] ||
  fail "stale compare-and-set crud/a was not rejected"
[ "$(get "${url[1]}/v1/kv/crud/a")" = two ] || fail "read crud/a after CAS"
[ "$(put "${url[2]}/v1/kv/crud/b" bee)" = 201 ] || fail "create crud/b via node 2"
[ "$(get "${url[3]}/v1/kv?prefix=crud/" | jq -r '[.items[].key] | join(",")')" = "crud/a,crud/b" ] || fail "list crud/"
[ "$(curl -s --max-time 8 -o /dev/null -w '%{http_code}' -X DELETE "${url[3]}/v1/kv/crud/b")" = 204 ] || fail "delete crud/b via node 3"
[ "$(code "${url[1]}/v1/kv/crud/b")" = 404 ] || fail "crud/b still there after delete"
step "CRUD through all three published ports: ok"

# --- acknowledged writes: key ack/<i> = v<i>; a write counts only once a node answered 2xx.
acked=()
next=0
# write_via NODES...: writes the next key through the given nodes in turn, retrying (bounded:
# 30 s) until one acknowledges it. A retry after an unknown outcome rewrites the same value.
write_via() {
  local i=$next deadline=$((SECONDS + 30)) n c k=0
  local nodes=("$@")
  while :; do
    n=${nodes[$((k % ${#nodes[@]}))]}
    c=$(put "${url[$n]}/v1/kv/ack/$i" "v$i" 6)
    case $c in
      200 | 201) break ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || fail "write ack/$i not acknowledged within 30s (last answer $c from node $n)"
    k=$((k + 1))
    sleep 0.2
  done
  acked+=("$i")
  next=$((next + 1))
}
# check_acked NODE [stale]: every acknowledged key reads back its value from NODE.
check_acked() {
  local n=$1 q='' i v bad=0
  [ "${2:-}" = stale ] && q='?consistency=stale'
  for i in "${acked[@]}"; do
    v=$(get "${url[$n]}/v1/kv/ack/$i$q") || v="<error>"
    [ "$v" = "v$i" ] || { echo "ack/$i via node $n: got '$v'" >&2; bad=$((bad + 1)); }
  done
  [ "$bad" -eq 0 ] || fail "$bad of ${#acked[@]} acknowledged writes did not read back from node $n"
}
caught_up_n() { [ "$(applied_of "$1" 2>/dev/null || echo 0)" -ge "$target" ]; }
cluster_json() { curl -s --max-time 3 -f "${url[$1]}/v1/cluster"; }
leader_of() { cluster_json "$1" | jq -r '.leader_id // empty'; }
applied_of() { cluster_json "$1" | jq -r '.applied_index'; }

for _ in $(seq 1 20); do write_via 1 2 3; done

# Background writer: key bg/<i> = b<i> through nodes 1, 2, 3 in turn, one attempt each (at most
# 3000 writes, 3 s each); acknowledged ones are appended to bg-acked.
bg_writer() {
  local i=0 c
  while [ ! -e "$work/stop" ] && [ "$i" -lt 3000 ]; do
    c=$(put "${url[$((i % 3 + 1))]}/v1/kv/bg/$i" "b$i" 3)
    case $c in
      200 | 201) echo "bg/$i b$i" >>"$work/bg-acked" ;;
      *) echo "bg/$i $c" >>"$work/bg-failed" ;;
    esac
    i=$((i + 1))
    sleep 0.05
  done
}
# check_bg NODE: every acknowledged background write is on NODE (stale scan, 1000 keys a page).
check_bg() {
  local n=$1 after='' page pages=0
  : >"$work/bg-seen"
  while [ "$pages" -lt 20 ]; do
    page=$(get "${url[$n]}/v1/kv?prefix=bg/&limit=1000&consistency=stale${after:+&after=$after}") ||
      fail "scan bg/ on node $n"
    jq -r '.items[] | "\(.key) \(.value)"' <<<"$page" >>"$work/bg-seen"
    after=$(jq -r '.next_after // empty | @uri' <<<"$page")
    pages=$((pages + 1))
    [ -n "$after" ] || break
  done
  local missing
  missing=$(sort "$work/bg-acked" | comm -23 - <(sort "$work/bg-seen") | wc -l)
  [ "$missing" -eq 0 ] || fail "$missing acknowledged background writes missing or wrong on node $n"
}
touch "$work/bg-acked" "$work/bg-failed"
bg_writer &
bg_pid=$!

# --- 4. kill the leader
leader=$(leader_of 1)
[ -n "$leader" ] || fail "no leader known to node 1"
others=()
for n in 1 2 3; do [ "$n" = "$leader" ] || others+=("$n"); done
step "leader is node $leader: docker kill"
docker kill "$(cid "$leader")" >/dev/null
t=$SECONDS
write_via "${others[@]}"
failover_secs=$((SECONDS - t))
for _ in $(seq 1 29); do write_via "${others[@]}"; done
new_leader=$(leader_of "${others[0]}")
if [ -z "$new_leader" ] || [ "$new_leader" = "$leader" ]; then fail "no new leader after killing node $leader"; fi
check_acked "${others[0]}"
check_acked "${others[1]}"
step "node $new_leader leads; first write acknowledged ${failover_secs}s after the kill; ${#acked[@]} acknowledged writes read back from nodes ${others[*]}"

state=$(docker inspect -f '{{.State.Status}}' "$(cid "$leader")")
step "killed container is '$state': docker start"
docker start "$(cid "$leader")" >/dev/null
t=$SECONDS
wait_until "node $leader ready again" 60 ready "$leader"
target=$(cluster_json "$new_leader" | jq -r '.commit_index')
caught_up() { [ "$(applied_of "$leader")" -ge "$target" ]; }
wait_until "node $leader to apply index $target" 30 caught_up
restart_secs=$((SECONDS - t))
check_acked "$leader" stale
step "node $leader ready and caught up to index $target ${restart_secs}s after docker start; all ${#acked[@]} acknowledged writes there (stale reads)"

# --- 5. partition a follower
leader=$(leader_of 1)
[ -n "$leader" ] || fail "no leader known to node 1"
victim=
for n in 3 2 1; do [ "$n" != "$leader" ] && { victim=$n; break; }; done
others=()
for n in 1 2 3; do [ "$n" = "$victim" ] || others+=("$n"); done
vcid=$(cid "$victim")
net=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$vcid")
# Compose gives each container the service name as a DNS alias; keep them for the reconnect.
mapfile -t aliases < <(docker inspect "$vcid" | jq -r --arg n "$net" '.[0].NetworkSettings.Networks[$n].Aliases // [] | .[]')
alias_args=()
for a in "${aliases[@]}"; do alias_args+=(--alias "$a"); done
before=$(applied_of "$victim")
step "disconnecting node $victim from $net (aliases: ${aliases[*]}) while writing through nodes ${others[*]}"
docker network disconnect "$net" "$vcid"
for _ in $(seq 1 30); do write_via "${others[@]}"; done
last=$((next - 1))
target=$(cluster_json "$leader" | jq -r '.commit_index')
# The isolated node cannot have the new writes: read its applied index from inside the container.
inside=$(docker exec "$vcid" ferrokv cluster status --json --endpoint http://127.0.0.1:8080 | jq -r '.applied_index')
[ "$inside" -lt "$target" ] || fail "isolated node $victim already at index $inside >= $target"
step "30 writes acknowledged during the partition; isolated node $victim at index $inside (was $before), cluster at $target"

docker network connect "${alias_args[@]}" "$net" "$vcid"
t=$SECONDS
caught_up_v() { [ "$(applied_of "$victim" 2>/dev/null || echo 0)" -ge "$target" ]; }
wait_until "node $victim to apply index $target after reconnecting" 60 caught_up_v
last_read() { [ "$(get "${url[$victim]}/v1/kv/ack/$last?consistency=stale" 2>/dev/null)" = "v$last" ]; }
wait_until "stale read of ack/$last on node $victim" 10 last_read
catchup_secs=$((SECONDS - t))
check_acked "$victim" stale
wait_until "node $victim ready" 30 ready "$victim"
touch "$work/stop"
wait "$bg_pid" || true
bg_pid=
bg_acked=$(wc -l <"$work/bg-acked")
bg_failed=$(wc -l <"$work/bg-failed")
[ "$bg_acked" -gt 0 ] || fail "the background writer got no write acknowledged"
target=$(cluster_json 1 | jq -r '.commit_index')
for n in 1 2 3; do
  wait_until "node $n to apply index $target" 30 caught_up_n "$n"
  check_acked "$n" stale
  check_bg "$n"
done
check_acked 1
step "node $victim reconnected and caught up in ${catchup_secs}s; on every node: ${#acked[@]} acknowledged writes" \
  "and $bg_acked acknowledged background writes ($bg_failed background writes failed or timed out)"

echo
echo "container test passed in $((SECONDS - start))s: image ${image_secs}s, cluster up ${up_secs}s," \
  "failover ${failover_secs}s, restart+catch-up ${restart_secs}s, partition catch-up ${catchup_secs}s," \
  "$((${#acked[@]} + bg_acked)) acknowledged writes, none lost"
