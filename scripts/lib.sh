# shellcheck shell=bash
# Shared helpers of scripts/: bring the services up (with Docker Compose when
# an engine answers and a compose command works, otherwise the locally
# installed servers), create the database and its user. Source it; do not
# run it.

set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${RUN_DIR:-$ROOT_DIR/run}"
CACHE_DIR="${COUPON_CACHE_DIR:-$HOME/.cache/coupon-service}"

DB_NAME="${DB_NAME:-e_commerce_db}"
DB_USER="${DB_USER:-application}"
DB_PASSWORD="${DB_PASSWORD:-application}"
MYSQL_HOST="${MYSQL_HOST:-127.0.0.1}"
MYSQL_PORT="${MYSQL_PORT:-3306}"
REDIS_HOST="${REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6379}"

# The application's database as the variables name it now (what mysql_app reads).
app_database_url() { echo "mysql://$DB_USER:$DB_PASSWORD@$MYSQL_HOST:$MYSQL_PORT/$DB_NAME"; }
export DATABASE_URL="${DATABASE_URL:-$(app_database_url)}"
export REDIS_URL="${REDIS_URL:-redis://$REDIS_HOST:$REDIS_PORT}"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# wait_for_port HOST PORT SECONDS
wait_for_port() {
  local host=$1 port=$2 secs=${3:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# docker_available: a Docker engine answers (and USE_DOCKER is not "no").
docker_available() {
  [[ "${USE_DOCKER:-auto}" != "no" ]] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

# find_compose: sets COMPOSE_CMD to this machine's compose command: `docker
# compose` when that subcommand answers (the v2 plugin), else `docker-compose`
# when installed (v1, or v2 as a standalone binary), else empty. Debian's
# Docker engine comes without the v2 plugin, so `docker` alone is not enough.
COMPOSE_CMD=()
find_compose() {
  COMPOSE_CMD=()
  if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE_CMD=(docker-compose)
  fi
}

# use_docker: whether ensure_services and ensure_kafka start the services
# with compose (an engine answers and a compose command works) or use the
# local servers. Decided once per script run, which logs its choice and why
# in one line.
use_docker() {
  if [[ -z "${SERVICES_VIA:-}" ]]; then
    local why
    if [[ "${USE_DOCKER:-auto}" == no ]]; then
      SERVICES_VIA=local why="USE_DOCKER=no"
    elif ! command -v docker >/dev/null 2>&1; then
      SERVICES_VIA=local why="no docker command"
    elif ! docker info >/dev/null 2>&1; then
      SERVICES_VIA=local why="no Docker engine answers (docker info failed)"
    elif find_compose && ((${#COMPOSE_CMD[@]} == 0)); then
      SERVICES_VIA=local why="a Docker engine answers, but 'docker compose' does not work and 'docker-compose' is not installed"
    elif [[ "${COMPOSE_CMD[*]}" == "docker compose" ]]; then
      SERVICES_VIA=docker why="a Docker engine answers and 'docker compose' works"
    else
      SERVICES_VIA=docker why="a Docker engine answers; 'docker compose' does not work (no compose v2 plugin), 'docker-compose' is installed"
    fi
    if [[ $SERVICES_VIA == docker ]]; then
      log "services: Docker via '${COMPOSE_CMD[*]}' ($why)"
    else
      log "services: the local servers ($why)"
    fi
  fi
  [[ $SERVICES_VIA == docker ]]
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

apt_install() {
  log "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

# Admin access to MySQL/MariaDB: root over the socket, else root over TCP.
mysql_admin() {
  if [[ -n "${MYSQL_ADMIN_CMD:-}" ]]; then $MYSQL_ADMIN_CMD "$@"; return; fi
  if mysql -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    mysql -uroot "$@"
  else
    mysql -h"$MYSQL_HOST" -P"$MYSQL_PORT" -uroot ${MYSQL_ROOT_PASSWORD:+-p"$MYSQL_ROOT_PASSWORD"} "$@"
  fi
}

# The application's own access, for operators' SQL.
mysql_app() {
  mysql -h"$MYSQL_HOST" -P"$MYSQL_PORT" -u"$DB_USER" -p"$DB_PASSWORD" "$DB_NAME" "$@"
}

ensure_mysql_local() {
  if ! command -v mariadbd >/dev/null 2>&1 && ! command -v mysqld >/dev/null 2>&1 && [[ ! -x /usr/sbin/mariadbd ]]; then
    apt_install mariadb-server mariadb-client
  fi
  if ! wait_for_port "$MYSQL_HOST" "$MYSQL_PORT" 1; then
    log "starting MariaDB"
    if [[ -x /usr/sbin/mariadbd ]]; then
      as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    else
      as_root service mariadb start || as_root service mysql start
    fi
    wait_for_port "$MYSQL_HOST" "$MYSQL_PORT" 60 || die "MySQL/MariaDB did not come up on $MYSQL_HOST:$MYSQL_PORT"
  fi
  local i
  for ((i = 0; i < 60; i++)); do mysql_admin -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done
  mysql_admin -e 'SELECT 1' >/dev/null || die "cannot log in to MySQL as root (set MYSQL_ROOT_PASSWORD or MYSQL_ADMIN_CMD)"
}

# Redis with AOF (appendfsync everysec): an acknowledged enqueue survives a
# Redis restart, losing at most the last second on a power cut.
ensure_redis_local() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  if ! wait_for_port "$REDIS_HOST" "$REDIS_PORT" 1; then
    log "starting Redis with AOF"
    mkdir -p "$CACHE_DIR/redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
      --dir "$CACHE_DIR/redis" --appendonly yes --appendfsync everysec \
      --logfile "$CACHE_DIR/redis/redis.log"
    wait_for_port "$REDIS_HOST" "$REDIS_PORT" 30 || die "Redis did not come up on $REDIS_PORT"
  fi
  if [[ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" CONFIG GET appendonly | tail -1)" != "yes" ]]; then
    log "switching Redis to AOF persistence"
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" CONFIG SET appendfsync everysec >/dev/null
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" CONFIG SET appendonly yes >/dev/null
  fi
}

# --- Redis Cluster: three local masters, no replicas, AOF everysec ---

REDIS_CLUSTER_PORTS="${REDIS_CLUSTER_PORTS:-7001 7002 7003}"
REDIS_CLUSTER_DIR="${REDIS_CLUSTER_DIR:-$CACHE_DIR/redis-cluster}"

# The REDIS_CLUSTER_NODES value of the local cluster.
redis_cluster_nodes() {
  local p out=()
  for p in $REDIS_CLUSTER_PORTS; do out+=("redis://$REDIS_HOST:$p"); done
  (IFS=,; echo "${out[*]}")
}

# Starts the local cluster's masters if stopped and creates the cluster the
# first time (idempotent: a created cluster keeps its nodes.conf and AOF).
ensure_redis_cluster() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  local p started=0 i first
  for p in $REDIS_CLUSTER_PORTS; do
    if wait_for_port "$REDIS_HOST" "$p" 1; then continue; fi
    mkdir -p "$REDIS_CLUSTER_DIR/$p"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$p" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
      --dir "$REDIS_CLUSTER_DIR/$p" --appendonly yes --appendfsync everysec \
      --logfile "$REDIS_CLUSTER_DIR/$p/redis.log" --pidfile "$REDIS_CLUSTER_DIR/$p/redis.pid"
    started=1
  done
  for p in $REDIS_CLUSTER_PORTS; do
    wait_for_port "$REDIS_HOST" "$p" 30 || die "Redis Cluster node did not come up on $p; see $REDIS_CLUSTER_DIR/$p/redis.log"
  done
  ((started)) && log "started Redis Cluster nodes on ports $REDIS_CLUSTER_PORTS (data in $REDIS_CLUSTER_DIR)"
  first=${REDIS_CLUSTER_PORTS%% *}
  if [[ "$(redis-cli -p "$first" CLUSTER INFO | tr -d '\r' | awk -F: '$1=="cluster_slots_assigned"{print $2}')" == 0 ]]; then
    log "creating the Redis Cluster"
    local nodes=()
    for p in $REDIS_CLUSTER_PORTS; do nodes+=("$REDIS_HOST:$p"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null \
      || die "redis-cli --cluster create failed"
  fi
  for ((i = 0; i < 100; i++)); do
    redis-cli -p "$first" CLUSTER INFO | grep -q '^cluster_state:ok' && break
    sleep 0.1
  done
  redis-cli -p "$first" CLUSTER INFO | grep -q '^cluster_state:ok' || die "Redis Cluster is not ok; see $REDIS_CLUSTER_DIR/*/redis.log"
}

stop_redis_cluster() {
  local p
  for p in $REDIS_CLUSTER_PORTS; do
    redis-cli -p "$p" SHUTDOWN >/dev/null 2>&1 || true
  done
}

# Database e_commerce_db and user application, with the right to create
# per-test databases coupon_test_*.
create_database() {
  log "creating database $DB_NAME and user $DB_USER"
  mysql_admin <<SQL
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '$DB_USER'@'%' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'%', '$DB_USER'@'localhost', '$DB_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`coupon\_test\_%\`.* TO '$DB_USER'@'%', '$DB_USER'@'localhost', '$DB_USER'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
}

ensure_services() {
  if use_docker; then
    compose_up mysql redis ${WITH_KAFKA:+kafka}
    export MYSQL_ADMIN_CMD="${MYSQL_ADMIN_CMD:-${COMPOSE_CMD[*]} -f $ROOT_DIR/docker-compose.yml exec -T mysql mysql -uroot -proot}"
  else
    ensure_mysql_local
    ensure_redis_local
  fi
  create_database
}

# --- Kafka: Docker's Apache Kafka, or the Kafka-compatible broker nisshi ---

KAFKA_HOST="${KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
export KAFKA_BROKERS="${KAFKA_BROKERS:-$KAFKA_HOST:$KAFKA_PORT}"
NISSHI_VERSION="0.8.1"
export NISSHI_BIN="${NISSHI_BIN:-$CACHE_DIR/nisshi/bin/nisshi}"
NISSHI_DATA="${NISSHI_DATA:-$CACHE_DIR/nisshi-data}"
# Storage engine of the broker: sqlite (a file in $NISSHI_DATA) or postgres
# (database nisshi on the local PostgreSQL); see docs/architecture.md, "Kafka without Docker".
NISSHI_STORAGE="${NISSHI_STORAGE:-sqlite}"

# Builds nisshi once (about 14 minutes on 2 cores) and caches it. Both storage
# engines are built in. --ignore-rust-version: one dependency declares a newer
# rustc than it needs.
install_nisshi() {
  if [[ -x "$NISSHI_BIN" ]] && "$NISSHI_BIN" --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then return; fi
  log "building the Kafka-compatible broker nisshi $NISSHI_VERSION (once; cached in $CACHE_DIR/nisshi)"
  cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version \
    --no-default-features --features libsql,postgres --root "$CACHE_DIR/nisshi" >&2
}

# nisshi_storage_url: the --storage-engine url for $NISSHI_STORAGE, creating
# the PostgreSQL database when needed.
nisshi_storage_url() {
  case "$NISSHI_STORAGE" in
    # Relative to $NISSHI_DATA, where the broker runs: nisshi joins even an
    # absolute path onto its working directory.
    sqlite) echo "sqlite://nisshi.db" ;;
    postgres)
      local pg="${NISSHI_PG_URL:-postgres://postgres@127.0.0.1:5432}"
      psql "$pg/postgres" -qtAc "SELECT 1 FROM pg_database WHERE datname = 'nisshi'" | grep -q 1 ||
        psql "$pg/postgres" -qc "CREATE DATABASE nisshi" >/dev/null
      # Loopback: no TLS (the local server's certificate names localhost, not 127.0.0.1).
      echo "$pg/nisshi?sslmode=disable"
      ;;
    *) die "NISSHI_STORAGE must be sqlite or postgres, not $NISSHI_STORAGE" ;;
  esac
}

# Starts nisshi unless something already listens on the Kafka port. It
# advertises 127.0.0.1: librdkafka may resolve localhost to ::1, where the
# broker does not listen.
start_nisshi() {
  if wait_for_port "$KAFKA_HOST" "$KAFKA_PORT" 1; then return; fi
  install_nisshi
  mkdir -p "$NISSHI_DATA"
  local storage
  storage=$(nisshi_storage_url)
  log "starting nisshi on $KAFKA_HOST:$KAFKA_PORT ($NISSHI_STORAGE storage)"
  (
    cd "$NISSHI_DATA"
    nohup "$NISSHI_BIN" broker \
      --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
      --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
      --storage-engine "$storage" >>nisshi.log 2>&1 &
    echo $! >nisshi.pid
  )
  wait_for_port "$KAFKA_HOST" "$KAFKA_PORT" 30 || die "nisshi did not come up; see $NISSHI_DATA/nisshi.log"
}

stop_nisshi() {
  if [[ -f "$NISSHI_DATA/nisshi.pid" ]]; then
    kill "$(cat "$NISSHI_DATA/nisshi.pid")" 2>/dev/null || true
    rm -f "$NISSHI_DATA/nisshi.pid"
  fi
}

ensure_kafka() {
  if use_docker; then
    compose_up kafka
  else
    start_nisshi
  fi
}

# --- the service's own processes, with pid files and logs in $RUN_DIR ---

# start_process NAME COMMAND...
start_process() {
  local name=$1
  shift
  mkdir -p "$RUN_DIR"
  nohup "$@" >>"$RUN_DIR/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
  log "started $name (pid $!, log $RUN_DIR/$name.log)"
}

# stop_process NAME: SIGTERM, then wait up to 15 s.
stop_process() {
  local pidfile="$RUN_DIR/$1.pid" pid i
  [[ -f "$pidfile" ]] || return 0
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $1"
  fi
  rm -f "$pidfile"
}

# wait_for_http URL SECONDS
wait_for_http() {
  local url=$1 secs=${2:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# make_active API QUEUE: the service at API enqueues into QUEUE from now on.
# APP_QUEUE_TYPE only seeds an empty record (docs/switching.md, S1), so a
# database that ran on the other queue before is switched explicitly, with
# PUT /api/admin/queue as an operator would (ADMIN_TOKEN), and this waits
# until the switch has settled.
make_active() {
  local api=$1 queue=$2 state i
  state=$(curl -fsS "$api/api/admin/queue") || die "the api at $api does not answer"
  [[ "$state" == *"\"type\":\"$queue\""* ]] && return 0
  log "the queue record of this database says otherwise: switching it to $queue"
  # Leaving Kafka settles once its end offsets are read: the broker must answer.
  [[ "$queue" == redis ]] && ensure_kafka
  curl -fsS -o /dev/null -X PUT "$api/api/admin/queue" -H "Authorization: Bearer ${ADMIN_TOKEN:-}" \
    -H 'Content-Type: application/json' -d "{\"type\":\"$queue\"}" || die "the switch to $queue was refused"
  for ((i = 0; i < 300; i++)); do
    [[ "$(curl -fsS "$api/api/admin/queue")" != *'"settledAt":null'* ]] && return 0
    sleep 0.1
  done
  die "the switch to $queue has not settled after 30 s (see GET $api/api/admin/queue)"
}

# wait_for_partitions PORT SECONDS: until the Kafka worker whose health
# endpoint is on PORT holds partitions (its consumer group has formed).
wait_for_partitions() {
  local port=$1 secs=${2:-60} i n
  for ((i = 0; i < secs * 5; i++)); do
    n=$(curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null | awk '$1=="kafka_assigned_partitions"{print int($2)}')
    [[ -n "$n" && "$n" -gt 0 ]] && return 0
    sleep 0.2
  done
  return 1
}

# --- test tools from PyPI and Debian, for the schemathesis and browser tests ---

SCHEMATHESIS_VERSION="4.32.5"
PLAYWRIGHT_VERSION="1.65.2"
TOOLS_VENV="${TOOLS_VENV:-$CACHE_DIR/venv}"

# A virtualenv in the cache with schemathesis and Playwright (the Python
# driver only: the browser is Debian's chromium, never a download).
ensure_python_tools() {
  if [[ -x "$TOOLS_VENV/bin/python" ]] && "$TOOLS_VENV/bin/python" - \
    "$SCHEMATHESIS_VERSION" "$PLAYWRIGHT_VERSION" 2>/dev/null <<'PY'; then
import sys
from importlib.metadata import version
sys.exit((version("schemathesis"), version("playwright")) != tuple(sys.argv[1:3]))
PY
    return
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION and playwright $PLAYWRIGHT_VERSION in $TOOLS_VENV"
  python3 -m venv "$TOOLS_VENV"
  "$TOOLS_VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" "playwright==$PLAYWRIGHT_VERSION" >&2 \
    || die "pip install failed"
}

CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"

ensure_chromium() {
  [[ -x "$CHROMIUM_BIN" ]] || apt_install chromium
  [[ -x "$CHROMIUM_BIN" ]] || die "no chromium at $CHROMIUM_BIN"
}

# fresh_database NAME: drops and recreates a scratch database the
# application user may use.
fresh_database() {
  mysql_admin -e "DROP DATABASE IF EXISTS \`$1\`"
  DB_NAME=$1 create_database >/dev/null
}

# redis_forget PREFIX: deletes every Redis key under PREFIX.
redis_forget() {
  redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" --scan --pattern "$1*" \
    | xargs -r -n 500 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" DEL >/dev/null
}

# --- containers: local stand-in images, docker compose v2 or v1 ---

LOCAL_BASE_IMAGE="${LOCAL_BASE_IMAGE:-coupon-local/debian:bookworm}"
LOCAL_MYSQL_IMAGE="${LOCAL_MYSQL_IMAGE:-coupon-local/mysql:8.0}"
LOCAL_REDIS_IMAGE="${LOCAL_REDIS_IMAGE:-coupon-local/redis:7}"
LOCAL_KAFKA_IMAGE="${LOCAL_KAFKA_IMAGE:-coupon-local/kafka:3.8.0}"
LOCAL_RUST_IMAGE="${LOCAL_RUST_IMAGE:-coupon-local/rust:1.95-bookworm}"

# The image variables of docker-compose.yml and the test harness, unless
# set: the official image if it is present or can be pulled, otherwise the
# stand-in scripts/images.sh builds (LOCAL_IMAGES=1 forces the stand-ins).
use_image_variables() {
  local spec name official local_name
  for spec in MYSQL_IMAGE=mysql:8.0=$LOCAL_MYSQL_IMAGE REDIS_IMAGE=redis:7=$LOCAL_REDIS_IMAGE \
    KAFKA_IMAGE=apache/kafka:3.8.0=$LOCAL_KAFKA_IMAGE \
    BUILDER_IMAGE=rust:1.95-bookworm=$LOCAL_RUST_IMAGE RUNTIME_IMAGE=debian:bookworm-slim=$LOCAL_BASE_IMAGE; do
    IFS='=' read -r name official local_name <<<"$spec"
    [[ -n "${!name:-}" ]] && continue
    if [[ "${LOCAL_IMAGES:-0}" != 1 ]] && { docker image inspect "$official" >/dev/null 2>&1 ||
      docker pull -q "$official" >/dev/null 2>&1; }; then
      export "$name=$official"
    else
      export "$name=$local_name"
    fi
  done
  log "images: $MYSQL_IMAGE $REDIS_IMAGE $KAFKA_IMAGE (build: $BUILDER_IMAGE, run: $RUNTIME_IMAGE)"
}

# compose ARGS...: docker-compose.yml with the command find_compose chose.
compose() {
  ((${#COMPOSE_CMD[@]})) || find_compose
  ((${#COMPOSE_CMD[@]})) || die "neither 'docker compose' nor 'docker-compose' is installed"
  "${COMPOSE_CMD[@]}" -f "$ROOT_DIR/docker-compose.yml" "$@"
}

# compose_up SERVICE...: starts the services and waits until their health
# checks pass: `up --wait` where the compose command has it; docker-compose
# v1 has not, so there each container's health is polled (up to 300 s).
compose_up() {
  if [[ "$(compose up --help 2>/dev/null)" == *--wait* ]]; then
    compose up -d --wait "$@"
    return
  fi
  compose up -d "$@"
  local svc id state i
  for svc in "$@"; do
    for ((i = 0; i < 300; i++)); do
      id=$(compose ps -q "$svc" 2>/dev/null || true)
      state=""
      [[ -n "$id" ]] && state=$(docker inspect -f \
        '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || true)
      case "$state" in
        healthy | running) break ;;
        unhealthy | exited | dead) die "the $svc container is $state; see: ${COMPOSE_CMD[*]} logs $svc" ;;
      esac
      sleep 1
    done
    [[ "$state" == healthy || "$state" == running ]] || die "the $svc container is not healthy after 300 s"
  done
}
