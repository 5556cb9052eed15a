#!/usr/bin/env bash
# End-to-end check of docker-compose.yml: builds the image, brings up MySQL,
# Redis, Kafka, the api and three workers, runs the seed flow with curl
# (create a coupon, issue, look the result up), then a race of 3,000
# requests during which one worker container is killed, audits the
# invariants in MySQL (scripts/concurrency-test.sh), tears everything down
# (`down -v`: no container or volume left) and prints PASS or FAIL.
#
#   scripts/compose-check.sh                  # Redis mode
#   APP_QUEUE_TYPE=kafka scripts/compose-check.sh
#
# Uses `docker compose`, else `docker-compose` (lib.sh's find_compose),
# project name coupon-check and host ports 19190 (api), 13306, 16379, 19092,
# so it runs beside scripts/up.sh. Official images where present, else the local stand-ins of
# scripts/images.sh (built if missing). A container that fails its health
# check has its logs printed, and the check fails. The audit is
# `loadgen audit` (common::audit), built here first with cargo so that the
# worker is killed during the race, not during that build.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

log "building loadgen (the race's audit)"
cargo build --release --quiet --bin loadgen

use_docker || die "compose-check needs a Docker engine and 'docker compose' or 'docker-compose' (see the reason above); install and start them, or set DOCKER_HOST"
use_image_variables
if [[ "$MYSQL_IMAGE$REDIS_IMAGE$KAFKA_IMAGE$BUILDER_IMAGE$RUNTIME_IMAGE" == *coupon-local/* ]]; then
  "$ROOT_DIR/scripts/images.sh"
fi

export COMPOSE_PROJECT_NAME=coupon-check
export API_HOST_PORT=${API_HOST_PORT:-19190} MYSQL_HOST_PORT=${MYSQL_HOST_PORT:-13306}
export REDIS_HOST_PORT=${REDIS_HOST_PORT:-16379} KAFKA_HOST_PORT=${KAFKA_HOST_PORT:-19092}
export ADMIN_TOKEN=compose-check-token BATCH_SIZE=${BATCH_SIZE:-25} APP_QUEUE_TYPE=${APP_QUEUE_TYPE:-redis}
export COUPON_IMAGE=${COUPON_IMAGE:-coupon-service:check}
API="http://127.0.0.1:$API_HOST_PORT"
started=$(date +%s)

result=FAIL
finish() {
  local rc=$?
  log "tearing down"
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  left=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
  [[ -z "$left" ]] || { echo "containers left: $left" >&2; result=FAIL; }
  [[ $rc -eq 0 ]] || result=FAIL
  echo "compose-check ($APP_QUEUE_TYPE): $result in $(($(date +%s) - started)) s"
  [[ $result == PASS ]] || exit 1
}
trap finish EXIT

# wait_healthy SECONDS SERVICE...: every container of the services healthy;
# an unhealthy or exited one has its logs printed and fails the check.
wait_healthy() {
  local secs=$1 i id state name all
  shift
  for ((i = 0; i < secs; i++)); do
    all=1
    for svc in "$@"; do
      for id in $(compose ps -q "$svc"); do
        state=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
        name=$(docker inspect -f '{{.Name}}' "$id")
        case "$state" in
          running/healthy) ;;
          */unhealthy | exited/* | dead/*)
            echo "container ${name#/} is $state; its logs:" >&2
            docker logs --tail 100 "$id" >&2 || true
            return 1 ;;
          *) all=0 ;;
        esac
      done
      [[ -n "$(compose ps -q "$svc")" ]] || all=0
    done
    ((all)) && return 0
    sleep 1
  done
  echo "not healthy after ${secs}s:" >&2
  compose ps >&2
  for svc in "$@"; do compose logs --tail 50 "$svc" >&2; done
  return 1
}

log "building the service image $COUPON_IMAGE (BUILDER_IMAGE=$BUILDER_IMAGE, RUNTIME_IMAGE=$RUNTIME_IMAGE)"
compose build api >&2
log "starting the stack with three workers"
compose up -d --scale worker=3 >&2
wait_healthy 240 mysql redis kafka api worker

log "seed flow"
coupon=$(curl -fsS -X POST "$API/api/admin/coupons" -H "Authorization: Bearer $ADMIN_TOKEN" \
  -H 'Content-Type: application/json' -d '{"name":"compose check","quantity":100}' |
  grep -o '"couponId":[0-9]*' | cut -d: -f2)
[[ -n "$coupon" ]] || die "creating a coupon failed"
sleep 1.5 # the api's coupon cache
request=$(curl -fsS -X POST "$API/api/coupons/$coupon/issue?userId=1" | grep -o '"requestId":"[^"]*"' | cut -d'"' -f4)
[[ -n "$request" ]] || die "issuing failed"
for ((i = 0; i < 100; i++)); do
  status=$(curl -fsS "$API/api/coupons/issue-requests/$request" | grep -o '"status":"[^"]*"' | cut -d'"' -f4)
  [[ "$status" != PENDING ]] && break
  sleep 0.2
done
[[ "$status" == SUCCESS ]] || die "the seed request ended as ${status:-nothing}, not SUCCESS"
curl -fsS "$API/api/coupons/$coupon" >&2
echo >&2

log "race: 3,000 requests (1,000 repeat users) for 500 coupons; one worker killed mid-drain"
export API_URL=$API MYSQL_HOST=127.0.0.1 MYSQL_PORT=$MYSQL_HOST_PORT REDIS_PORT=$REDIS_HOST_PORT
scripts/concurrency-test.sh -c "$coupon" -n 3000 -r 1000 -s 500 -t 180 &
race=$!
# The kill lands mid-drain: once the workers have written the race's first
# results (reset-db.sh removed the seed's), not after a fixed delay.
for ((i = 0; i < 1200; i++)); do
  kill -0 "$race" 2>/dev/null || break
  done_count=$(mysql_app -N -e "SELECT COUNT(*) FROM coupon_issue_result WHERE coupon_id = $coupon" 2>/dev/null || echo 0)
  ((done_count >= ${KILL_AT_RESULTS:-50})) && break
  sleep 0.1
done
# Not `| head -1`: docker-compose v1 writing unbuffered (PYTHONUNBUFFERED)
# dies of a broken pipe once head has exited, which pipefail makes fatal.
workers=$(compose ps -q worker)
victim=${workers%%$'\n'*}
log "killing worker container $(docker inspect -f '{{.Name}}' "$victim")"
docker kill "$victim" >/dev/null
wait "$race"
result=PASS
