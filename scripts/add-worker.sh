#!/usr/bin/env bash
# Starts one more worker process next to those scripts/up.sh started.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -f "$RUN_DIR/queue" ]] || die "nothing is up; run scripts/up.sh first"
export APP_QUEUE_TYPE="$(cat "$RUN_DIR/queue")"
nodes="$(cat "$RUN_DIR/redis-cluster-nodes" 2>/dev/null || true)"
if [[ -n "$nodes" ]]; then export REDIS_CLUSTER_NODES="$nodes"; else unset REDIS_CLUSTER_NODES; fi
n=1
while [[ -f "$RUN_DIR/worker-$n.pid" ]]; do n=$((n + 1)); done
# Each worker needs its own health port.
export WORKER_PORT="${WORKER_PORT:-$((8080 + n))}"
start_process "worker-$n" "$ROOT_DIR/target/release/worker"
wait_for_http "http://127.0.0.1:$WORKER_PORT/health" 30 || die "worker-$n not up; see $RUN_DIR/worker-$n.log"
echo "worker-$n running, health on port $WORKER_PORT"
