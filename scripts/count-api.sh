#!/usr/bin/env bash
# The api's instructions per accepted request, beside a bare axum server's
# per answer: a figure that does not swing with the machine, as CPU time
# does (valgrind's callgrind counts instructions, not seconds).
#
#   scripts/count-api.sh [--requests 3000] [--queue redis|kafka] [--api-bin PATH]...
#
# --api-bin may be given more than once (for example the baseline that
# `scripts/bench.sh --before REF` leaves in run/bench/before/api): each
# build's api is counted the same way, one after the other.
#
# Each server runs under `valgrind --tool=callgrind`. 2,000 calls warm it up
# (connections, caches, the api's first coupon), its counters are zeroed,
# then REQUESTS calls from as many distinct users on a coupon of as many
# units, 128 in flight, no worker running (so every api call is an
# enqueue), and the counters are dumped: instructions ÷ accepted requests.
# Only user-space instructions are counted (the kernel's socket work, which
# both servers do, is not), of every thread of the process. The counts of
# runs of the same build stay within 1 % (Redis) to 3 % (Kafka) of each
# other.
#
# Needs valgrind (Debian: valgrind). Uses its own database
# coupon_test_count, Redis keys under count:PID:N:, Kafka topic count-PID-N
# (N: the build's place on the command line),
# ports COUNT_API_PORT (29490) and COUNT_BARE_PORT (29491); a single Redis
# node, whatever the caller's environment says.
set -euo pipefail
caller_dir=$PWD
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

requests=3000 queue=redis api_bins=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --requests) requests=$2; shift 2 ;;
    --queue) queue=$2; shift 2 ;;
    --api-bin) api_bins+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
done
[[ "$queue" == redis || "$queue" == kafka ]] || die "--queue is redis or kafka"
for i in "${!api_bins[@]}"; do
  api_bins[i]=$(cd "$caller_dir" && realpath -e "${api_bins[i]}") || die "no api at ${api_bins[i]}"
done
command -v valgrind >/dev/null || apt_install valgrind

unset REDIS_CLUSTER_NODES
export RUN_DIR="$ROOT_DIR/run/count" RUST_LOG=warn ADMIN_TOKEN=count-admin-token
export DB_NAME=coupon_test_count APP_QUEUE_TYPE=$queue REDIS_KEY_PREFIX="count:$$:" KAFKA_TOPIC="count-$$"
export DATABASE_URL="$(app_database_url)"
api_port=${COUNT_API_PORT:-29490} bare_port=${COUNT_BARE_PORT:-29491}
# Not through `env`: valgrind would count `env`, not the api it execs.
export API_PORT=$api_port
ensure_services
[[ "$queue" == kafka ]] && ensure_kafka
log "building api and loadgen (release)"
cargo build --release --quiet --bin api --bin loadgen
BIN="${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release"
((${#api_bins[@]})) || api_bins=("$BIN/api")
mkdir -p "$RUN_DIR"
rm -f "$RUN_DIR"/callgrind.*
cleanup() {
  stop_process api 2>/dev/null
  stop_process bare-http 2>/dev/null
  redis_forget "count:$$:" 2>/dev/null || true
}
trap cleanup EXIT

# counted NAME URL ARGS...: warms the server NAME (running under callgrind)
# up, zeroes its counters, sends the calls, dumps the counters; prints
# "instructions accepted".
counted() {
  local name=$1 url=$2 pid dump accepted
  shift 2
  pid=$(cat "$RUN_DIR/$name.pid")
  "$BIN/loadgen" sale --api "$url" --requests 2000 --users 2000 --stock 2000 --seed 7 "$@" \
    --run 1 --mode "$queue" --kind "count-warm-$name" >/dev/null
  callgrind_control --zero "$pid" >/dev/null
  "$BIN/loadgen" sale --api "$url" --requests "$requests" --users "$requests" --stock "$requests" \
    --seed 8 "$@" --run 1 --mode "$queue" --kind "count-$name" >"$RUN_DIR/$name.json"
  callgrind_control --dump "$pid" >/dev/null
  # The dump is written by the process itself, at its next scheduling point.
  for ((i = 0; i < 100; i++)); do
    dump=$(ls -t "$RUN_DIR/callgrind.$name.$pid".* 2>/dev/null | head -1 || true)
    [[ -n "$dump" ]] && grep -q '^totals:' "$dump" && break
    sleep 0.1
  done
  [[ -n "$dump" ]] && grep -q '^totals:' "$dump" || die "callgrind wrote no whole dump for $name"
  accepted=$(grep -o '"accepted":[0-9]*' "$RUN_DIR/$name.json" | head -1 | cut -d: -f2)
  echo "$(awk '/^totals:/ {print $2; exit}' "$dump") ${accepted:-0}"
}
per() { awk -v i="$1" -v n="$2" 'BEGIN{ if (n > 0) printf "%.0f", i / n; else print "n/a" }'; }
callgrind() { # callgrind NAME COMMAND...
  local name=$1
  shift
  start_process "$name" valgrind --tool=callgrind --callgrind-out-file="$RUN_DIR/callgrind.$name.%p" "$@"
}

callgrind bare-http "$BIN/loadgen" bare-http --port "$bare_port"
wait_for_port 127.0.0.1 "$bare_port" 120 || die "bare-http did not start"
out=$(counted bare-http "http://127.0.0.1:$bare_port" --bare)
read -r ins n <<<"$out"
stop_process bare-http
bare=$(per "$ins" "$n")
echo "bare HTTP server: $bare instructions per answer ($n answers)"

build=0
for api_bin in "${api_bins[@]}"; do
  # Each build on a fresh database, whose coupon ids start again at 1, so
  # with keys and a topic of its own (the repeat gate would remember the
  # last build's users).
  build=$((build + 1))
  export REDIS_KEY_PREFIX="count:$$:$build:" KAFKA_TOPIC="count-$$-$build"
  fresh_database "$DB_NAME"
  "$api_bin" --migrate-only >/dev/null
  callgrind api "$api_bin"
  wait_for_http "http://127.0.0.1:$api_port/ready" 300 || die "api not ready: $RUN_DIR/api.log"
  # A database that ran on the other queue before is switched as an operator would.
  if curl -fsS -o /dev/null "http://127.0.0.1:$api_port/api/admin/queue" 2>/dev/null; then
    make_active "http://127.0.0.1:$api_port" "$queue"
  fi
  out=$(counted api "http://127.0.0.1:$api_port" --backlog "$RUN_DIR/backlog.json" \
    --database-url "$DATABASE_URL" --admin-token "$ADMIN_TOKEN")
  read -r ins n <<<"$out"
  stop_process api
  api=$(per "$ins" "$n")
  echo "api ($api_bin, $queue): $api instructions per accepted request ($n accepted):" \
    "$(awk -v a="$api" -v b="$bare" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "n/a" }')× the bare server's"
done
