#!/usr/bin/env bash
# Starts one more worker process next to those scripts/up.sh started, of the
# queue the demo started on, or of the one --queue names (after
# scripts/switch-queue.sh, workers of both queues may run).
#
#   scripts/add-worker.sh [--queue redis|kafka]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -f "$RUN_DIR/queue" ]] || die "nothing is up; run scripts/up.sh first"
queue="$(cat "$RUN_DIR/queue")"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --queue) queue="$2"; shift 2 ;;
    --queue=*) queue="${1#*=}"; shift ;;
    *) die "unknown argument $1 (usage: scripts/add-worker.sh [--queue redis|kafka])" ;;
  esac
done
[[ "$queue" == redis || "$queue" == kafka ]] || die "--queue must be redis or kafka, not $queue"
export APP_QUEUE_TYPE="$queue"
nodes="$(cat "$RUN_DIR/redis-cluster-nodes" 2>/dev/null || true)"
if [[ -n "$nodes" ]]; then export REDIS_CLUSTER_NODES="$nodes"; else unset REDIS_CLUSTER_NODES; fi
n=1
while [[ -f "$RUN_DIR/worker-$n.pid" ]]; do n=$((n + 1)); done
# Each worker needs its own health port.
export WORKER_PORT="${WORKER_PORT:-$((8080 + n))}"
start_process "worker-$n" "${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/worker"
echo "$queue" >"$RUN_DIR/worker-$n.queue"
wait_for_http "http://127.0.0.1:$WORKER_PORT/health" 30 || die "worker-$n not up; see $RUN_DIR/worker-$n.log"
if [[ "$queue" == kafka ]]; then
  wait_for_partitions "$WORKER_PORT" 90 || die "worker-$n got no partitions; see $RUN_DIR/worker-$n.log"
fi
echo "worker-$n ($queue) running, health on port $WORKER_PORT"
