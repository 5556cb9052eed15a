#!/usr/bin/env bash
# Drain-time benchmark: 10,000 issue requests for a 1,000-stock coupon,
# fired by the Rust load generator through the real api, timed until every
# request has its result in MySQL, audited with the same invariant checks as
# the tests. Each configuration runs --runs times, interleaved (the machine is
# noisy), and the medians are printed. The baseline, measured in the same
# run, is BATCH_SIZE=1: one transaction per request, as a naive worker does.
#
#   scripts/bench.sh [--queue redis|kafka] [--workers "1 2"] [--runs 3]
#                    [--requests 10000] [--stock 1000] [--batches "1 500"]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

queue=redis workers="1 2" runs=3 requests=10000 stock=1000 batches="1 500"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --queue) queue=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --stock) stock=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
done

export DB_NAME=e_commerce_bench
export DATABASE_URL="mysql://$DB_USER:$DB_PASSWORD@$MYSQL_HOST:$MYSQL_PORT/$DB_NAME"
export RUN_DIR="$ROOT_DIR/run/bench" APP_QUEUE_TYPE=$queue ADMIN_TOKEN=bench-admin-token
export API_PORT=29090 REDIS_KEY_PREFIX="bench:" RUST_LOG=warn
export KAFKA_TOPIC="bench-coupon-issue-events" KAFKA_GROUP_ID="bench-consumer-group"
ensure_services
[[ "$queue" == kafka ]] && ensure_kafka
cargo build --release --quiet --bin api --bin worker --bin loadgen
BIN="$ROOT_DIR/target/release"
"$BIN/api" --migrate-only >/dev/null
results="$RUN_DIR/results.jsonl"
mkdir -p "$RUN_DIR"
: >"$results"
trap '"$ROOT_DIR/scripts/down.sh" --quiet' EXIT

for ((run = 1; run <= runs; run++)); do
  for w in $workers; do
    for b in $batches; do
      "$ROOT_DIR/scripts/down.sh" --quiet
      # A fresh topic and group per run: every run starts from an empty log
      # and a new group, so runs do not depend on each other.
      export KAFKA_TOPIC="bench-$$-$run-$w-$b" KAFKA_GROUP_ID="bench-group-$$-$run-$w-$b"
      start_process api "$BIN/api" 2>/dev/null
      wait_for_http "http://127.0.0.1:$API_PORT/ready" 60 || die "api not ready"
      for ((i = 1; i <= w; i++)); do
        BATCH_SIZE=$b WORKER_PORT=$((29100 + i)) start_process "worker-$i" "$BIN/worker" 2>/dev/null
      done
      for ((i = 1; i <= w; i++)); do
        wait_for_http "http://127.0.0.1:$((29100 + i))/ready" 60 || die "worker not ready"
        if [[ "$queue" == kafka && $i -le 3 ]]; then
          wait_for_partitions $((29100 + i)) 60 || die "worker-$i got no partitions"
        fi
      done
      line=$("$BIN/loadgen" --api "http://127.0.0.1:$API_PORT" --admin-token "$ADMIN_TOKEN" \
        --requests "$requests" --stock "$stock")
      echo "{\"queue\":\"$queue\",\"workers\":$w,\"batch\":$b,\"run\":$run,\"result\":$line}" | tee -a "$results"
    done
  done
done

echo
echo "queue=$queue requests=$requests stock=$stock runs=$runs (medians)"
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = sorted({(r["workers"], r["batch"]) for r in rows})
print(f"{'workers':>7} {'batch':>5} {'drain s':>8} {'e2e req/s':>10} {'accept req/s':>12}  runs")
for w, b in keys:
    rs = [r["result"] for r in rows if (r["workers"], r["batch"]) == (w, b)]
    d = statistics.median(x["drainSeconds"] for x in rs)
    e = statistics.median(x["endToEndPerSecond"] for x in rs)
    a = statistics.median(x["acceptedPerSecond"] for x in rs)
    runs = " ".join(f"{x['drainSeconds']:.2f}" for x in rs)
    print(f"{w:>7} {b:>5} {d:>8.2f} {e:>10.0f} {a:>12.0f}  [{runs}]")
PY
