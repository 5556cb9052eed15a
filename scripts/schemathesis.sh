#!/usr/bin/env bash
# Property-based test of the api against its own OpenAPI document:
# schemathesis generates valid and invalid requests for every operation and
# runs all its checks (no 5xx, documented status codes, content types and
# schemas, invalid input refused, auth enforced, ...). The api runs in Redis
# mode on its own database, key prefix and port; issue requests it accepts
# stay queued (no worker) and are deleted afterwards.
#
#   scripts/schemathesis.sh [extra schemathesis arguments]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

export RUN_DIR="$ROOT_DIR/run/schemathesis" DB_NAME=e_commerce_schemathesis
export DATABASE_URL="$(app_database_url)"
export APP_QUEUE_TYPE=redis REDIS_KEY_PREFIX="schemathesis-$$:" API_PORT=19390
export ADMIN_TOKEN=schemathesis-admin-token RUST_LOG=warn
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-50}"

ensure_services
fresh_database "$DB_NAME"
ensure_python_tools
cargo build --release --quiet --bin api
BIN="${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release"

cleanup() {
  stop_process api
  redis_forget "$REDIS_KEY_PREFIX"
}
trap cleanup EXIT
start_process api "$BIN/api"
wait_for_http "http://127.0.0.1:$API_PORT/ready" 60 || die "api not ready; see $RUN_DIR/api.log"
# A few coupons, so that generated ids sometimes hit one.
for i in 1 2 3; do
  curl -fsS -o /dev/null -X POST "http://127.0.0.1:$API_PORT/api/admin/coupons" \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"name\":\"schemathesis $i\",\"quantity\":100}"
done

log "schemathesis $SCHEMATHESIS_VERSION, all checks, up to $MAX_EXAMPLES examples per operation"
# From RUN_DIR: schemathesis keeps its own state in ./.schemathesis.
cd "$RUN_DIR"
"$TOOLS_VENV/bin/schemathesis" --no-color \
  --config-file "$ROOT_DIR/tests/schemathesis/schemathesis.toml" run "http://127.0.0.1:$API_PORT/api-docs/openapi.json" \
  --checks all \
  --header "Authorization: Bearer $ADMIN_TOKEN" \
  --max-examples "$MAX_EXAMPLES" \
  --seed "${SCHEMATHESIS_SEED:-20261127}" \
  --report junit --report-dir "$RUN_DIR/report" \
  "$@"
