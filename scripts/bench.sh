#!/usr/bin/env bash
# The benchmark users run. Per queue mode, through the real api and workers
# (release build), with the Rust load generator (bench/, `loadgen`):
#
#   sale        REQUESTS calls from USERS distinct users (repeats included) on
#               one coupon of STOCK units, 128 in flight: accepted req/s and
#               p50/p99/p99.9 of the issue call while the coupon is open;
#               answers/s once it is sold out (409, nothing enqueued); time
#               until every accepted request has its result; invariant audit
#   sale-20     the same calls spread over 20 coupons of STOCK/20 units
#   sold-out    the same calls on a coupon created with 0 units, the worker
#               idle: every answer a 409, from the api's memory once it has
#               read the coupon's (empty) repeat gate
#   rate        RATE req/s offered (open loop) on a coupon that does not sell
#               out: request-to-result p50/p99 (processed_at - requested_at
#               in MySQL for every request, and over HTTP for a sample)
#   backlog     the sale's calls queued with no worker running, then one
#               worker started: its drain in results/s
#   batch-1     a small backlog drained with BATCH_SIZE=1, and the same with
#               the default batch (batch-N): their ratio
#   rss         peak RSS (VmHWM) of the api and of the workers
#   crowd       CROWD_USERS users clicking CROWD_CLICKS times each on one
#               coupon of CROWD_STOCK (clicks shuffled, 128 in flight); every
#               user with a 202 waits for that request's result from then on
#               (look-ups with waitMs=5000; a client pauses 1 s after a 202
#               that came back at once), through a fresh api and one worker:
#               queue entries, result rows and MySQL SELECTs/INSERTs
#               (Com_select and Com_insert of the server) per user, click
#               p50/p99, time until the last user knows; invariant audit
#   accept-before  with --before REF: the accept step through REF's api
#               (same build and database as crowd-before), interleaved with
#               accept: the api's CPU per accepted request before and after
#   crowd-before  with --before REF: the same crowd against REF's api and
#               worker (built in release into run/bench/before/, from a
#               detached worktree run/bench/before-src, target dir
#               run/bench/before-target), with its own database
#               coupon_test_bench_before and keys; interleaved with crowd
#               (odd runs: crowd first), and beside it in a "Crowd" table
#
#   accept      REQUESTS calls from as many users on a coupon of as many
#               units, no worker running (every call an enqueue), through an
#               api of its own (keys ...accept:, topic ...-accept): accepted
#               req/s and the api's CPU time per accepted request (/proc);
#               with the CPU time of Redis, MariaDB, the broker and loadgen
#               over the same calls, and the cores' rest (as for bare-http)
#
# and, in the same run, the ceilings each figure is divided by:
#
#   bare-http   `loadgen bare-http`: the issue route answering a same-sized
#               202 with no work, driven like the sale; its CPU time per
#               answer is the ceiling of the api's per accepted request;
#               the CPU time of every process over its calls, and what the
#               cores had left, per answer (loadgen sale --machine-pid)
#   enqueue     the project's Redis enqueue (same script, same client) alone,
#               and a bare rdkafka producer with the project's settings, 128
#               in flight; the client's own CPU per event
#   insert      multi-row INSERTs of result rows (BATCH rows each) into a
#               scratch database over one connection
#   insert-2    the same over two connections side by side, into the same
#               table: what batches decided side by side could gain at most
#
# Every step runs RUNS times, interleaved (the machine is noisy; the default
# 3 runs of both modes take 6 to 10 minutes on 2 cores). Every step's
# figures are one JSON line of run/bench/results.jsonl, printed by loadgen
# itself (the CPU and RSS figures this script reads from /proc go through
# `loadgen line`); `loadgen report` then writes the medians, each beside its
# ceiling from the same run, into run/bench/results.md and
# run/bench/results.json, the same tables into docs/performance.md between
# its `<!-- bench:begin -->` and `<!-- bench:end -->` lines (skipped, with a
# note, when it has none), and the per-second timeline of the last sale into
# docs/bench.svg. A run that breaks an invariant or gets refused requests is
# a failed run: it is marked FAILED in the table and the script exits
# non-zero.
#
#   scripts/bench.sh [--quick] [--queues "redis kafka"] [--runs 3]
#                    [--requests 100000] [--users 50000] [--stock 10000]
#                    [--rate 5000] [--rate-seconds 5] [--batch 500]
#                    [--crowd-users 50000] [--crowd-clicks 5]
#                    [--crowd-stock 10000] [--before REF]
#                    [--plot docs/bench.svg] [--doc docs/performance.md]
#                    [--readme README.md] [--save-reference]
#
# The regression guard: every run compares the api's CPU per accepted
# request (accept step), as a multiple of the bare server's per answer, with
# bench/reference.json, and warns when it is more than 15 % over it (a row
# in the table too); --save-reference writes this run's multiples there.
# --readme: the headline figures go between its
# `<!-- bench:summary:begin -->` and `<!-- bench:summary:end -->` lines.
#
# --quick: 20,000 calls from 10,000 users on 2,000 units, a crowd of 10,000
# users × 5 clicks on 2,000 units, one run (about a minute per mode).
# --before REF: any git ref (main, a tag, a commit); its first build is a
# cold release build of REF's api and worker (up to 25 minutes on 2 cores),
# later ones are incremental. Ports: BENCH_API_PORT (29090),
# BENCH_WORKER_PORT (29100, the worker's is one above), BENCH_BARE_PORT
# (29200). Database BENCH_DB (e_commerce_bench), scratch database
# coupon_test_bench_ceiling, the baseline's BENCH_BEFORE_DB
# (coupon_test_bench_before; both made afresh at each start), Redis keys under bench:PID:RUN: (the
# baseline's under bench:PID:RUN:before:), Kafka topics bench-PID-RUN (and
# bench-PID-RUN-before). Every Redis key under bench: (this bench's, and
# any an earlier one left) is removed at each run's start; topics are not.
# While it runs, the bench turns Redis's automatic append-only file rewrite
# off (CONFIG SET auto-aof-rewrite-percentage 0; set back at its exit) and
# rewrites the file itself at each run's start, between the steps.
# POLL_INTERVAL_MS of the Redis worker stays at its default (1000); one
# extra, labelled row measures `rate` with POLL_INTERVAL_MS=50.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

queues="redis kafka" runs=3 requests=100000 users=50000 stock=10000 coupons=20
rate=5000 rate_seconds=5 batch=500 small=4000 plot="$ROOT_DIR/docs/bench.svg"
doc="$ROOT_DIR/docs/performance.md" readme="$ROOT_DIR/README.md" save_reference="" crowd_users=50000 crowd_clicks=5 crowd_stock=10000 before_ref=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick)
      runs=1 requests=20000 users=10000 stock=2000 rate_seconds=3 small=2000
      crowd_users=10000 crowd_stock=2000
      shift
      ;;
    --queues) queues=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    --stock) stock=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --rate-seconds) rate_seconds=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --crowd-users) crowd_users=$2; shift 2 ;;
    --crowd-clicks) crowd_clicks=$2; shift 2 ;;
    --crowd-stock) crowd_stock=$2; shift 2 ;;
    --before) before_ref=$2; shift 2 ;;
    --plot) plot=$2; shift 2 ;;
    --doc) doc=$2; shift 2 ;;
    --readme) readme=$2; shift 2 ;;
    --save-reference) save_reference=--save-reference; shift ;;
    -h|--help) sed -n '2,/^source/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
done

# A single Redis node, whatever the caller's environment says (the Redis
# Cluster figures are measured apart: docs/performance.md, "Redis Cluster").
unset REDIS_CLUSTER_NODES
export DB_NAME=${BENCH_DB:-e_commerce_bench}
export DATABASE_URL="$(app_database_url)"
# The application user may create coupon_test_* databases.
SCRATCH_URL="mysql://$DB_USER:$DB_PASSWORD@$MYSQL_HOST:$MYSQL_PORT/coupon_test_bench_ceiling"
export RUN_DIR="$ROOT_DIR/run/bench" ADMIN_TOKEN=bench-admin-token RUST_LOG=warn
API_PORT=${BENCH_API_PORT:-29090} BARE_PORT=${BENCH_BARE_PORT:-29200} WORKER_PORT0=${BENCH_WORKER_PORT:-29100}
export API_PORT
API="http://127.0.0.1:$API_PORT"
ensure_services
[[ " $queues " == *" kafka "* ]] && ensure_kafka
log "building api, worker and loadgen (release)"
cargo build --release --quiet --bin api --bin worker --bin loadgen
BIN="${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release"
# A fresh database each time: a queue record left by an earlier bench (its
# last switch away from Kafka, under another run's topic) would have this
# run's Redis workers hold every coupon at the switch barrier, which reads
# the Kafka topic the workers are given.
fresh_database "$DB_NAME"
"$BIN/api" --migrate-only >/dev/null
mysql_admin -e 'CREATE DATABASE IF NOT EXISTS coupon_test_bench_ceiling CHARACTER SET utf8mb4'
DATABASE_URL=$SCRATCH_URL "$BIN/api" --migrate-only >/dev/null
mkdir -p "$RUN_DIR"

# The baseline of the crowd-before steps: REF's api and worker, built in
# release from a detached worktree, with their own target dir and database
# (REF may know fewer migrations: an api refuses a newer schema).
BEFORE_BIN="$RUN_DIR/before" BEFORE_URL="" before_label=""
if [[ -n "$before_ref" ]]; then
  before_commit=$(git rev-parse --verify --quiet "$before_ref^{commit}") || die "--before $before_ref is not a commit"
  before_label=$(git rev-parse --short "$before_commit")
  [[ "$before_commit" == "$before_ref"* ]] || before_label="$before_ref ($before_label)"
  before_src="$RUN_DIR/before-src"
  git worktree prune
  if [[ -e "$before_src/.git" ]]; then
    git -C "$before_src" checkout --quiet --detach "$before_commit"
  else
    git worktree add --quiet --detach "$before_src" "$before_commit"
  fi
  log "building the baseline $before_label: api and worker (release)"
  (cd "$before_src" && CARGO_TARGET_DIR="$RUN_DIR/before-target" cargo build --release --quiet --bin api --bin worker)
  mkdir -p "$BEFORE_BIN"
  cp "$RUN_DIR/before-target/release/api" "$RUN_DIR/before-target/release/worker" "$BEFORE_BIN/"
  before_db=${BENCH_BEFORE_DB:-coupon_test_bench_before}
  fresh_database "$before_db" # afresh, as the bench's own (above)
  BEFORE_URL="mysql://$DB_USER:$DB_PASSWORD@$MYSQL_HOST:$MYSQL_PORT/$before_db"
fi
load_before="load average $(cut -d' ' -f1 /proc/loadavg) at the start"
results="$RUN_DIR/results.jsonl"
: >"$results"
# Redis's housekeeping out of the steps: a rewrite of the append-only file
# is a forked child that takes a core for up to about two seconds, and its
# CPU is not the server's own (it would fall into the front door's "rest").
# Each run starts with the bench's keys forgotten (about 100 MB a run, most
# of it the accept step's streams and gates) and the file compacted, and
# the automatic rewrite stays off until the bench exits, when the setting it
# had is put back. A bench killed before its exit leaves 0 and the value it
# found in $aof_mark; the next bench puts that one back.
redis_admin() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }
aof_mark="$CACHE_DIR/bench-aof-rewrite-percentage"
aof_rewrite_percentage=$(redis_admin CONFIG GET auto-aof-rewrite-percentage | tail -1) || true
if [[ "$aof_rewrite_percentage" == 0 && -s "$aof_mark" ]]; then
  aof_rewrite_percentage=$(<"$aof_mark")
fi
[[ "$aof_rewrite_percentage" =~ ^[0-9]+$ ]] ||
  die "cannot read Redis's auto-aof-rewrite-percentage (CONFIG GET answered ${aof_rewrite_percentage:-nothing})"
quiet_redis() {
  local waited=0 info
  redis_forget "bench:"
  redis_admin BGREWRITEAOF >/dev/null 2>&1 || true
  while :; do
    info=$(redis_admin INFO persistence)
    [[ "$info" =~ (aof_rewrite_in_progress|aof_rewrite_scheduled|rdb_bgsave_in_progress):1 ]] || break
    ((waited++ < 600)) || die "Redis's background save or rewrite did not end within 60 s"
    sleep 0.1
  done
}
cleanup() {
  redis_admin CONFIG SET auto-aof-rewrite-percentage "$aof_rewrite_percentage" >/dev/null && rm -f "$aof_mark"
  "$ROOT_DIR/scripts/down.sh" --quiet
  stop_process bare-http
}
trap cleanup EXIT
mkdir -p "$CACHE_DIR"
echo "$aof_rewrite_percentage" >"$aof_mark"
redis_admin CONFIG SET auto-aof-rewrite-percentage 0 >/dev/null

steps_per_mode=12
[[ -n "$before_ref" ]] && steps_per_mode=14
total_steps=$(((3 + steps_per_mode * $(wc -w <<<"$queues")) * runs)) step=0
progress() {
  step=$((step + 1))
  log "[$step/$total_steps] run $run/$runs: $*"
}

# record MODE KIND COMMAND...: runs a loadgen step, which prints its line of
# results.jsonl (--run, --mode and --kind name the step), and appends it.
failures=0
record() {
  local mode=$1 kind=$2 rc=0
  shift 2
  "$@" --run "$run" --mode "$mode" --kind "$kind" >"$RUN_DIR/step.out" || rc=$?
  append_step "$mode" "$kind" "$rc"
}
# append_step MODE KIND EXIT_CODE: the step's line from step.out; a step
# that printed none (it died before it could) gets a line saying so.
append_step() {
  local mode=$1 kind=$2 rc=$3
  [[ $rc -eq 0 ]] || failures=$((failures + 1))
  if [[ -s "$RUN_DIR/step.out" ]]; then
    cat "$RUN_DIR/step.out" >>"$results"
  else
    "$BIN/loadgen" line failed --run "$run" --mode "$mode" --kind "$kind" \
      --error "no figures (see the messages above)" >>"$results"
  fi
}

# Peak RSS in kB of a process we started.
vm_hwm() { awk '/^VmHWM/ {print $2}' "/proc/$(cat "$RUN_DIR/$1.pid")/status" 2>/dev/null || echo 0; }
peak_worker=0
WORKER_BIN="$BIN/worker"
start_worker() { # start_worker N ENV...
  local n=$1
  shift
  start_process "worker-$n" env "$@" WORKER_PORT=$((WORKER_PORT0 + n)) "$WORKER_BIN" 2>/dev/null
  wait_for_http "http://127.0.0.1:$((WORKER_PORT0 + n))/ready" 60 || die "worker not ready"
  if [[ "$APP_QUEUE_TYPE" == kafka ]]; then
    wait_for_partitions $((WORKER_PORT0 + n)) 60 || die "worker got no partitions"
  fi
}
stop_worker() {
  local hwm
  hwm=$(vm_hwm "worker-$1")
  ((hwm > peak_worker)) && peak_worker=$hwm
  stop_process "worker-$1" 2>/dev/null
}

# drain_with_worker KIND ENV...: the drain watcher first, then the worker, so
# that the watcher sees the first result.
drain_with_worker() {
  local kind=$1 rc=0 dpid
  shift
  "$BIN/loadgen" drain --backlog "$RUN_DIR/backlog.json" --run "$run" --mode "$queue" \
    --kind "$kind" >"$RUN_DIR/step.out" &
  dpid=$!
  start_worker 1 "$@"
  wait "$dpid" || rc=$?
  append_step "$queue" "$kind" "$rc"
  stop_worker 1
}

# CPU seconds (user + system) so far of the processes that share the machine
# during a sale, as the NAME=SECONDS words of `loadgen line cpu`; children of
# this shell stand for loadgen. MariaDB and the broker also serve whatever
# else runs on the machine.
clk_tck=$(getconf CLK_TCK)
cpu_of_pid() { awk -v t="$clk_tck" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The pids of the services the bench shares the machine with; empty when
# one is not running.
# Redis's pid as it says it, if that is a redis-server on this host (not
# the pid inside a container).
redis_pid() {
  local pid
  pid=$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" info server | awk -F: '/^process_id/ {print $2+0}')
  [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-server ]] && echo "$pid"
  return 0
}
mariadb_pid() { pgrep -o -x mariadbd || pgrep -o -x mysqld || true; }
broker_pid() {
  [[ -f "$NISSHI_DATA/nisshi.pid" ]] && kill -0 "$(cat "$NISSHI_DATA/nisshi.pid")" 2>/dev/null &&
    cat "$NISSHI_DATA/nisshi.pid"
  return 0
}
cpu_snapshot() {
  local redis_pid maria_pid broker_pid children
  redis_pid=$(redis_pid) maria_pid=$(mariadb_pid) broker_pid=$(broker_pid)
  : "${redis_pid:=0}" "${maria_pid:=0}" "${broker_pid:=0}"
  # `times` in this shell, not in a pipe: a subshell has no children's times.
  times >"$RUN_DIR/times"
  children=$(tail -1 "$RUN_DIR/times" | awk '{gsub(/[ms]/, " "); print $1 * 60 + $2 + $3 * 60 + $4}')
  echo "api=$(cpu_of_pid "$(cat "$RUN_DIR/api.pid")") worker=$(cpu_of_pid "$(cat "$RUN_DIR/worker-1.pid")")" \
    "redis=$(cpu_of_pid "$redis_pid") mariadb=$(cpu_of_pid "$maria_pid") broker=$(cpu_of_pid "$broker_pid")" \
    "loadgen=$children wall=$(date +%s.%N)"
}

# --machine-pid NAME=PID words for the processes beside the server of the
# bare and accept steps (the server is --cpu-pid): loadgen sale reads their
# CPU time over the calls, and its own, to show where the cores' time went.
machine_pids() {
  local name pid
  for name in redis mariadb broker; do
    pid=$("${name}_pid")
    [[ -n "$pid" ]] && echo "--machine-pid $name=$pid"
  done
  return 0
}

sale() { "$BIN/loadgen" sale --api "$API" --admin-token "$ADMIN_TOKEN" "$@"; }

# crowd_step KIND: the crowd phase through a fresh api and one worker, this
# build's (crowd) or the baseline's (crowd-before, with its own database,
# Redis keys and Kafka topic).
crowd_step() {
  local kind=$1 bin=$BIN db=$DATABASE_URL suffix=""
  if [[ "$kind" == crowd-before ]]; then
    bin=$BEFORE_BIN db=$BEFORE_URL suffix="before"
  fi
  local env=(DATABASE_URL="$db" REDIS_KEY_PREFIX="$REDIS_KEY_PREFIX${suffix:+$suffix:}"
    KAFKA_TOPIC="$KAFKA_TOPIC${suffix:+-$suffix}" KAFKA_GROUP_ID="$KAFKA_GROUP_ID${suffix:+-$suffix}")
  progress "$queue $kind: $crowd_users users × $crowd_clicks clicks on 1 coupon of $crowd_stock, and their waits"
  start_process api env "${env[@]}" "$bin/api" 2>/dev/null
  wait_for_http "$API/ready" 60 || die "api ($kind) not ready"
  # A baseline from before the live switch has no queue record to set.
  if curl -fsS -o /dev/null "$API/api/admin/queue" 2>/dev/null; then
    make_active "$API" "$queue"
  fi
  WORKER_BIN="$bin/worker" start_worker 1 "${env[@]}" BATCH_SIZE="$batch"
  record "$queue" "$kind" "$BIN/loadgen" crowd --api "$API" --admin-token "$ADMIN_TOKEN" \
    --database-url "$db" --label "$queue $kind" --users "$crowd_users" --clicks "$crowd_clicks" \
    --stock "$crowd_stock"
  stop_worker 1
  stop_process api 2>/dev/null
}
# accept_step KIND: the accept step through this build's api (accept) or the
# baseline's (accept-before, with its own database, keys and topic).
accept_step() {
  local kind=$1 bin=$BIN db=$DATABASE_URL suffix=""
  if [[ "$kind" == accept-before ]]; then
    bin=$BEFORE_BIN db=$BEFORE_URL suffix="before"
  fi
  local prefix="$REDIS_KEY_PREFIX${suffix:+$suffix:}" topic="$KAFKA_TOPIC${suffix:+-$suffix}"
  # The queue record is switched by an api with the mode's own keys and
  # topic (a switch remembers the topic it leaves); the accept step's api
  # then finds it set.
  start_process api env DATABASE_URL="$db" REDIS_KEY_PREFIX="$prefix" KAFKA_TOPIC="$topic" \
    "$bin/api" 2>/dev/null
  wait_for_http "$API/ready" 60 || die "api ($kind) not ready"
  # A baseline from before the live switch has no queue record to set.
  if curl -fsS -o /dev/null "$API/api/admin/queue" 2>/dev/null; then
    make_active "$API" "$queue"
  fi
  stop_process api 2>/dev/null
  progress "$queue $kind: $requests calls from as many users, no worker running"
  start_process api env DATABASE_URL="$db" REDIS_KEY_PREFIX="${prefix}accept:" \
    KAFKA_TOPIC="$topic-accept" "$bin/api" 2>/dev/null
  wait_for_http "$API/ready" 60 || die "api ($kind) not ready"
  record "$queue" "$kind" sale --label "$queue $kind" --database-url "$db" --requests "$requests" \
    --users "$requests" --stock "$requests" --backlog "$RUN_DIR/accept.json" \
    --cpu-pid "$(cat "$RUN_DIR/api.pid")" $(machine_pids)
  stop_process api 2>/dev/null
}
# in_turn KIND FUNCTION: FUNCTION KIND, and with --before also FUNCTION
# KIND-before, this build and the baseline in turn, the first alternating by
# run. (Not `step`: that is the progress counter.)
in_turn() {
  local kind=$1 fn=$2 kinds=("$1")
  if [[ -n "$before_ref" ]]; then
    kinds=("$kind" "$kind-before")
    ((run % 2 == 0)) && kinds=("$kind-before" "$kind")
  fi
  for kind in "${kinds[@]}"; do
    "$fn" "$kind"
  done
}
small_args=(--requests "$small" --users $((small / 2)) --stock $((small / 10)))

for ((run = 1; run <= runs; run++)); do
  quiet_redis
  progress "ceiling: bare HTTP server, $requests calls at c=128"
  start_process bare-http "$BIN/loadgen" bare-http --port "$BARE_PORT" 2>/dev/null
  wait_for_port 127.0.0.1 "$BARE_PORT" 10 || die "bare-http did not start"
  record any bare-http "$BIN/loadgen" sale --bare --label bare-http --api "http://127.0.0.1:$BARE_PORT" \
    --requests "$requests" --users "$users" --cpu-pid "$(cat "$RUN_DIR/bare-http.pid")" $(machine_pids)
  stop_process bare-http 2>/dev/null

  # The two inserts take turns going first, run by run.
  inserts=("insert 1" "insert-2 2")
  ((run % 2 == 0)) && inserts=("insert-2 2" "insert 1")
  for insert in "${inserts[@]}"; do
    read -r insert_kind insert_connections <<<"$insert"
    progress "ceiling: bulk insert of $requests result rows, $batch per statement, $insert_connections connection(s)"
    record any "$insert_kind" "$BIN/loadgen" insert --database-url "$SCRATCH_URL" --rows "$requests" \
      --batch "$batch" --connections "$insert_connections"
  done

  for queue in $queues; do
    export APP_QUEUE_TYPE=$queue REDIS_KEY_PREFIX="bench:$$:$run:" KAFKA_TOPIC="bench-$$-$run"
    export KAFKA_GROUP_ID="bench-group-$$-$run"

    progress "$queue ceiling: enqueue alone, $requests events at c=128"
    scratch="bench-ceiling-$$-$run"
    [[ "$queue" == redis ]] && scratch="bench-ceiling:$$:$run:"
    record "$queue" enqueue "$BIN/loadgen" enqueue --queue "$queue" --requests "$requests" \
      --users "$users" --scratch "$scratch"

    "$ROOT_DIR/scripts/down.sh" --quiet
    in_turn accept accept_step

    peak_worker=0
    start_process api "$BIN/api" 2>/dev/null
    wait_for_http "$API/ready" 60 || die "api not ready"
    make_active "$API" "$queue"
    start_worker 1 BATCH_SIZE="$batch"

    progress "$queue sale: $requests calls, $users users, 1 coupon of $stock"
    cpu_snapshot >"$RUN_DIR/cpu-before"
    record "$queue" sale sale --label "$queue sale" --requests "$requests" --users "$users" --stock "$stock"
    cpu_snapshot >"$RUN_DIR/cpu-after"
    "$BIN/loadgen" line cpu --run "$run" --mode "$queue" --kind cpu \
      --before "$(<"$RUN_DIR/cpu-before")" --after "$(<"$RUN_DIR/cpu-after")" >>"$results"
    progress "$queue sale: the same calls on $coupons coupons of $((stock / coupons))"
    record "$queue" sale-20 sale --label "$queue sale-20" --requests "$requests" --users "$users" \
      --stock "$stock" --coupons "$coupons"
    progress "$queue sold out: $requests calls on a coupon of 0 units, worker idle"
    record "$queue" sold-out sale --label "$queue sold-out" --requests "$requests" --users "$users" \
      --stock 0
    api_kb_closed=$(vm_hwm api)
    n=$((rate * rate_seconds))
    progress "$queue rate: $rate req/s offered for ${rate_seconds}s"
    record "$queue" rate sale --label "$queue rate" --rate "$rate" --requests "$n" --users "$n" --stock "$n"
    stop_worker 1

    if [[ "$queue" == redis ]]; then
      progress "$queue rate with POLL_INTERVAL_MS=50 (extra)"
      start_worker 1 BATCH_SIZE="$batch" POLL_INTERVAL_MS=50
      record "$queue" rate-poll50 sale --label "$queue rate poll=50" --rate "$rate" --requests "$n" \
        --users "$n" --stock "$n"
      stop_worker 1
    else
      progress "$queue (no extra row)"
    fi

    progress "$queue backlog: $requests calls queued, then one worker"
    record "$queue" backlog-fill sale --label "$queue backlog" --requests "$requests" --users "$users" \
      --stock "$stock" --backlog "$RUN_DIR/backlog.json"
    drain_with_worker backlog BATCH_SIZE="$batch"

    for b in 1 "$batch"; do
      progress "$queue batch: $small calls queued, one worker with BATCH_SIZE=$b"
      record "$queue" "batch-$b-fill" sale --label "$queue batch $b" "${small_args[@]}" \
        --backlog "$RUN_DIR/backlog.json"
      drain_with_worker "batch-$b" BATCH_SIZE="$b"
    done

    progress "$queue peak RSS"
    "$BIN/loadgen" line rss --run "$run" --mode "$queue" --kind rss --api-kb "$(vm_hwm api)" \
      --api-kb-closed-loop "$api_kb_closed" --worker-kb "$peak_worker" >>"$results"
    stop_process api 2>/dev/null

    in_turn crowd crowd_step
  done
done

machine="$load_before; $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
"$BIN/loadgen" report --input "$results" --out-dir "$RUN_DIR" --plot "$plot" --doc "$doc" \
  --readme "$readme" --reference "$ROOT_DIR/bench/reference.json" $save_reference \
  --machine "$machine" --cores "$(nproc)" --batch "$batch" --requests "$requests" \
  --users "$users" --stock "$stock" --coupons "$coupons" --rate "$rate" --small "$small" \
  ${before_label:+--before "$before_label"}
cat "$RUN_DIR/results.md"
log "wrote $RUN_DIR/results.md, $RUN_DIR/results.json and $plot"
((failures == 0)) || die "$failures step(s) failed; see FAILED in the table"
