#!/usr/bin/env bash
# Brings the whole service up on this machine: MySQL/MariaDB and Redis (and
# Kafka with --queue kafka), database and user, migrations, a release build,
# the api and one worker in the background, and demo coupon 1 with stock 100.
#
#   scripts/up.sh                 # Redis mode
#   REDIS_CLUSTER=1 scripts/up.sh # Redis mode on a local 3-master Redis Cluster
#                                 # (or: scripts/up.sh --cluster)
#   QUEUE=kafka scripts/up.sh     # or: scripts/up.sh --queue kafka
#   USE_DOCKER=no scripts/up.sh   # the local servers even if Docker Compose works
#   scripts/down.sh               # stops what this started
#
# MySQL, Redis (and Kafka) run in Docker when an engine answers and `docker
# compose` or else `docker-compose` works, otherwise as local servers
# (lib.sh's use_docker logs which and why).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUEUE="${QUEUE:-${APP_QUEUE_TYPE:-redis}}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --queue) QUEUE="$2"; shift 2 ;;
    --queue=*) QUEUE="${1#*=}"; shift ;;
    --cluster) REDIS_CLUSTER=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
done
[[ "$QUEUE" == redis || "$QUEUE" == kafka ]] || die "QUEUE must be redis or kafka, not $QUEUE"

export APP_QUEUE_TYPE="$QUEUE"
export ADMIN_TOKEN="${ADMIN_TOKEN:-dev-admin-token}"
export API_PORT="${API_PORT:-9090}"
export WORKER_PORT="${WORKER_PORT:-8081}"
export RUST_LOG="${RUST_LOG:-info}"

ensure_services
[[ "$QUEUE" == kafka ]] && ensure_kafka
if [[ "${REDIS_CLUSTER:-0}" == 1 && "$QUEUE" == redis ]]; then
  ensure_redis_cluster
  export REDIS_CLUSTER_NODES="${REDIS_CLUSTER_NODES:-$(redis_cluster_nodes)}"
fi

log "building api and worker (release)"
(cd "$ROOT_DIR" && cargo build --release --quiet --bin api --bin worker)
BIN="${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release"

"$ROOT_DIR/scripts/down.sh" --quiet
"$BIN/api" --migrate-only

start_process api "$BIN/api"
wait_for_http "http://127.0.0.1:$API_PORT/ready" 60 || die "api not ready; see $RUN_DIR/api.log"
make_active "http://127.0.0.1:$API_PORT" "$QUEUE"
start_process worker-1 "$BIN/worker"
echo "$QUEUE" >"$RUN_DIR/worker-1.queue"
wait_for_http "http://127.0.0.1:$WORKER_PORT/health" 60 || die "worker not up; see $RUN_DIR/worker-1.log"
if [[ "$QUEUE" == kafka ]]; then
  log "waiting for the worker to join consumer group ${KAFKA_GROUP_ID:-coupon-issue-consumer-group}"
  wait_for_partitions "$WORKER_PORT" 90 || die "the worker got no partitions; see $RUN_DIR/worker-1.log"
fi
echo "$QUEUE" >"$RUN_DIR/queue"
echo "${REDIS_CLUSTER_NODES:-}" >"$RUN_DIR/redis-cluster-nodes"

"$ROOT_DIR/scripts/reset-db.sh" 1 100 >/dev/null
log "demo coupon 1 has stock 100"

cat <<MSG

  Coupon service is up ($QUEUE mode${REDIS_CLUSTER_NODES:+ on the Redis Cluster $REDIS_CLUSTER_NODES}).
    api     http://127.0.0.1:$API_PORT    (log $RUN_DIR/api.log)
    worker  http://127.0.0.1:$WORKER_PORT/health   (log $RUN_DIR/worker-1.log)

  Try it:
    curl -s -X POST 'http://127.0.0.1:$API_PORT/api/coupons/1/issue?userId=42'
    curl -s http://127.0.0.1:$API_PORT/api/coupons/issue-requests/<requestId>
    curl -s http://127.0.0.1:$API_PORT/api/coupons/1
    curl -s -X POST http://127.0.0.1:$API_PORT/api/admin/coupons \\
         -H 'Authorization: Bearer $ADMIN_TOKEN' -H 'Content-Type: application/json' \\
         -d '{"name":"noon sale","quantity":100}'

  Race 1,000 users for it:   scripts/concurrency-test.sh -n 1000
  Another worker:            scripts/add-worker.sh
  Move the live sale:        scripts/switch-queue.sh $( [[ $QUEUE == redis ]] && echo kafka || echo redis)
  Stop everything:           scripts/down.sh
MSG
