#!/usr/bin/env bash
# Where the api's CPU goes on the accept path (Redis mode): the api's CPU
# time per accepted request, beside a bare axum server's per answer (the
# ceiling, same run), and a perf profile of the api drawn as a flame graph.
#
#   scripts/profile-api.sh [--requests 20000] [--svg docs/profile-accept-redis.svg]
#                          [--api-bin PATH]
#
# --api-bin: another build's api (e.g. the baseline `scripts/bench.sh
# --before REF` leaves in run/bench/before/api), to compare its CPU per
# request with this build's on the same machine.
#
# N calls from N distinct users (no repeats) on a coupon of N units, 128 in
# flight, no worker running (so every call is an enqueue, none a sold-out or
# a repeat), against the release api, and the same calls against
# `loadgen bare-http`, three times each, interleaved: medians. CPU time is
# user + system from /proc/PID/stat over the load. The profile is taken in
# a fourth api run (perf's own cost lands on the profiled process). The profile needs `perf` (Debian: linux-perf) and inferno
# (`cargo install inferno`); without them only the CPU figures are printed.
# Uses its own database coupon_test_profile, Redis keys under profile:PID:,
# ports PROFILE_API_PORT (29390) and PROFILE_BARE_PORT (29391).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

requests=20000 svg="$ROOT_DIR/docs/profile-accept-redis.svg" api_bin=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --requests) requests=$2; shift 2 ;;
    --svg) svg=$2; shift 2 ;;
    --api-bin) api_bin=$2; shift 2 ;;
    -h|--help) sed -n '2,/^source/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
done

# A single Redis node, whatever the caller's environment says (the Redis
# Cluster figures are measured apart: docs/performance.md, "Redis Cluster").
unset REDIS_CLUSTER_NODES
export RUN_DIR="$ROOT_DIR/run/profile" RUST_LOG=warn ADMIN_TOKEN=profile-admin-token
export DB_NAME=coupon_test_profile APP_QUEUE_TYPE=redis REDIS_KEY_PREFIX="profile:$$:"
export DATABASE_URL="$(app_database_url)"
api_port=${PROFILE_API_PORT:-29390} bare_port=${PROFILE_BARE_PORT:-29391}
ensure_services
log "building api and loadgen (release, with debug info)"
cargo build --release --quiet --bin api --bin loadgen
BIN="${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release"
api_bin=${api_bin:-$BIN/api}
fresh_database "$DB_NAME"
mkdir -p "$RUN_DIR"
cleanup() { stop_process api 2>/dev/null; stop_process bare-http 2>/dev/null; }
trap cleanup EXIT

clk_tck=$(getconf CLK_TCK)
cpu_seconds() { awk -v t="$clk_tck" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
profiling=0
if command -v perf >/dev/null && command -v inferno-collapse-perf >/dev/null; then
  profiling=1
else
  log "perf or inferno missing: CPU figures only (no flame graph)"
fi

# load NAME URL ARGS...: the calls against URL, with the CPU time of
# process NAME over them; prints "cpu_seconds answered".
load() {
  local name=$1 url=$2 pid before after answered
  shift 2
  pid=$(cat "$RUN_DIR/$name.pid")
  before=$(cpu_seconds "$pid")
  "$BIN/loadgen" sale --api "$url" --requests "$requests" --users "$requests" "$@" \
    --run 1 --mode redis --kind "profile-$name" >"$RUN_DIR/$name.json"
  after=$(cpu_seconds "$pid")
  answered=$(grep -o '"accepted":[0-9]*' "$RUN_DIR/$name.json" | head -1 | cut -d: -f2)
  echo "$(awk -v a="$before" -v b="$after" 'BEGIN{printf "%.3f", b - a}') ${answered:-0}"
}

"$api_bin" --migrate-only >/dev/null
start_process api env API_PORT="$api_port" "$api_bin"
wait_for_http "http://127.0.0.1:$api_port/ready" 60 || die "api not ready"
start_process bare-http "$BIN/loadgen" bare-http --port "$bare_port"
wait_for_port 127.0.0.1 "$bare_port" 10 || die "bare-http did not start"
api_load() {
  load api "http://127.0.0.1:$api_port" --stock "$requests" \
    --backlog "$RUN_DIR/backlog.json" --database-url "$DATABASE_URL" --admin-token "$ADMIN_TOKEN"
}
per() { awk -v s="$1" -v n="$2" 'BEGIN{ if (n > 0) printf "%.1f", s * 1e6 / n; else print "n/a" }'; }
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# Three of each, interleaved, without the profiler (it costs the api CPU).
: >"$RUN_DIR/api-us" && : >"$RUN_DIR/bare-us"
for run in 1 2 3; do
  read -r cpu n < <(api_load)
  per "$cpu" "$n" >>"$RUN_DIR/api-us" && echo >>"$RUN_DIR/api-us"
  read -r cpu n < <(load bare-http "http://127.0.0.1:$bare_port" --bare)
  per "$cpu" "$n" >>"$RUN_DIR/bare-us" && echo >>"$RUN_DIR/bare-us"
  log "run $run: api $(tail -1 "$RUN_DIR/api-us") µs per accepted request, bare server $(tail -1 "$RUN_DIR/bare-us") µs per answer"
done
stop_process bare-http
api_us=$(median <"$RUN_DIR/api-us") bare_us=$(median <"$RUN_DIR/bare-us")
echo "api CPU per accepted request: $api_us µs (median of 3; each run $requests calls, all accepted)"
echo "bare HTTP server CPU per answer: $bare_us µs (median of 3, same runs)"
echo "ratio: $(awk -v a="$api_us" -v b="$bare_us" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "n/a" }')"

if ((profiling)); then
  perf record -F 499 -g --call-graph dwarf,16384 -o "$RUN_DIR/perf.data" \
    -p "$(cat "$RUN_DIR/api.pid")" >/dev/null 2>&1 &
  perf_pid=$!
  sleep 1
  read -r _ accepted < <(api_load)
  kill -INT "$perf_pid"
  wait "$perf_pid" || true
fi
echo "api peak RSS: $(awk '/^VmHWM/ {printf "%.0f MB", $2 / 1024}' "/proc/$(cat "$RUN_DIR/api.pid")/status")"
stop_process api

if ((profiling)); then
  perf script -i "$RUN_DIR/perf.data" 2>/dev/null | inferno-collapse-perf >"$RUN_DIR/perf.folded"
  inferno-flamegraph --title "api accept path, Redis mode ($accepted accepted)" \
    <"$RUN_DIR/perf.folded" >"$svg"
  log "flame graph: $svg (folded stacks: $RUN_DIR/perf.folded)"
fi
