#!/usr/bin/env bash
# The test command. Brings up what the tests need (MySQL/MariaDB, Redis with
# AOF, the Kafka broker), runs every test of the workspace against those real
# services, then smoke-tests the operator scripts end to end
# (up.sh, concurrency-test.sh, down.sh) on their own database and ports,
# fuzzes the api against its OpenAPI document (schemathesis.sh) and checks
# the dashboard in headless chromium during a sale (browser-test.sh).
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -E 'test(race)' # extra arguments go to cargo nextest
#   SMOKE=0 scripts/test.sh         # skip the scripts smoke test
#   SCHEMATHESIS=0 BROWSER=0 scripts/test.sh  # skip the schemathesis / browser tests
#   scripts/test.sh --containers    # services in containers (testcontainers), see below
#
# --containers: needs only a Docker engine. DATABASE_URL, REDIS_URL and
# KAFKA_BROKERS are unset, so the tests start MySQL, Redis and Kafka with
# testcontainers (images MYSQL_IMAGE, REDIS_IMAGE, KAFKA_IMAGE: the official
# ones if present, else the stand-ins scripts/images.sh builds), shared by
# all test processes and removed at the end. The operator-scripts smoke test
# is skipped (it runs the services scripts/ start), and so is each test that
# kills a server process of its own when that server's binary is not
# installed locally (redis-server; mariadbd; the broker in
# ~/.cache/coupon-service).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

if [[ "${1:-}" == --containers ]]; then
  shift
  docker_available || die "--containers needs a Docker engine: docker info failed (install Docker and start it, or set DOCKER_HOST)"
  use_image_variables
  if [[ "$MYSQL_IMAGE$REDIS_IMAGE$KAFKA_IMAGE" == *coupon-local/* ]]; then
    WITH_RUST=0 scripts/images.sh
  fi
  unset DATABASE_URL REDIS_URL KAFKA_BROKERS
  remove_test_containers() {
    local ids
    ids=$(docker ps -aq --filter label=coupon-service.test)
    [[ -z "$ids" ]] || docker rm -f -v $ids >/dev/null
  }
  remove_test_containers
  trap remove_test_containers EXIT
  skip=()
  command -v redis-server >/dev/null || skip+=("test(a_queue_process_killed_mid_sale_is_reconnected_to_and_replays_every_accepted_request::case_1_redis)")
  # The broker binary testkit/src/servers.rs starts.
  [[ -x "$NISSHI_BIN" ]] || skip+=("test(a_queue_process_killed_mid_sale_is_reconnected_to_and_replays_every_accepted_request::case_2_kafka)"
    "test(a_dead_kafka_broker_gives_503_and_the_api_recovers_without_restart)")
  # The MySQL outage tests pause and kill a mariadbd of their own.
  command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || skip+=("test(through_a_mysql_outage)")
  filter=()
  if ((${#skip[@]})); then
    log "skipped (no local server binary to kill): ${skip[*]}"
    filter=(-E "not ($(IFS='|'; echo "${skip[*]}" | sed 's/|/ | /g'))")
  fi
  cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
  log "running the workspace tests against containers"
  cargo nextest run --workspace --profile ci "${filter[@]}" "$@"
  log "all tests passed (containers)"
  exit 0
fi

ensure_services
ensure_kafka
# The tests that kill a broker start nisshi processes of their own.
install_nisshi
# The cluster tests share this cluster (REDIS_CLUSTER_NODES); the one that
# kills a master starts its own.
ensure_redis_cluster
export REDIS_CLUSTER_NODES="${REDIS_CLUSTER_NODES:-$(redis_cluster_nodes)}"

# Databases left behind by earlier test runs.
stale=$(mysql_admin -N -e "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'coupon\\_test\\_%'" || true)
if [[ -n "$stale" ]]; then
  log "dropping $(wc -w <<<"$stale") stale test databases"
  for db in $stale; do mysql_admin -e "DROP DATABASE \`$db\`"; done
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
log "running the workspace tests"
cargo nextest run --workspace --profile ci "$@"

if [[ "${SMOKE:-1}" == 1 ]]; then
  log "smoke test of the operator scripts"
  export RUN_DIR="$ROOT_DIR/run/smoke" DB_NAME=e_commerce_smoke API_PORT=19090 WORKER_PORT=18081
  export REDIS_KEY_PREFIX="smoke:" DATABASE_URL="mysql://$DB_USER:$DB_PASSWORD@$MYSQL_HOST:$MYSQL_PORT/e_commerce_smoke"
  trap '"$ROOT_DIR/scripts/down.sh" --quiet' EXIT
  cluster_nodes=$REDIS_CLUSTER_NODES
  unset REDIS_CLUSTER_NODES
  for queue in ${SMOKE_QUEUES:-redis redis-cluster kafka}; do
    # A topic and group of its own per run: the broker's data outlives runs.
    export KAFKA_TOPIC="smoke-$$-coupon-issue-events" KAFKA_GROUP_ID="smoke-$$-consumer-group"
    if [[ $queue == redis-cluster ]]; then
      REDIS_CLUSTER=1 REDIS_CLUSTER_NODES=$cluster_nodes QUEUE=redis scripts/up.sh >/dev/null
    else
      QUEUE=$queue scripts/up.sh >/dev/null
    fi
    scripts/concurrency-test.sh -n 1000 -r 400 -s 100
    scripts/down.sh --quiet
  done
fi
if [[ "${SCHEMATHESIS:-1}" == 1 ]]; then
  log "schemathesis against the api's OpenAPI document"
  scripts/schemathesis.sh
fi
if [[ "${BROWSER:-1}" == 1 ]]; then
  log "the dashboard in headless chromium during a sale"
  scripts/browser-test.sh
fi
log "all tests passed"
