#!/usr/bin/env bash
# The dashboard in a real headless browser: starts the api and a worker
# (Redis mode, own database, key prefix and ports), opens /dashboard in
# Debian's chromium driven by Playwright, runs a sale and checks the page
# follows it (tests/browser/dashboard_test.py). Installs what it needs:
# Debian's chromium, and Playwright's Python driver from PyPI (never a
# browser download).
#
#   scripts/browser-test.sh                         # screenshot in run/browser/
#   SCREENSHOT=docs/dashboard.png WORKERS=2 scripts/browser-test.sh --requests 3000 --stock 2000
#   (extra arguments go to tests/browser/dashboard_test.py)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

export RUN_DIR="$ROOT_DIR/run/browser" DB_NAME=e_commerce_browser
export DATABASE_URL="$(app_database_url)"
export APP_QUEUE_TYPE=redis REDIS_KEY_PREFIX="browser-$$:" API_PORT=19290 WORKER_PORT=19281
export ADMIN_TOKEN=browser-admin-token RUST_LOG=warn
SCREENSHOT="${SCREENSHOT:-$RUN_DIR/dashboard.png}"

ensure_services
fresh_database "$DB_NAME"
ensure_python_tools
ensure_chromium
cargo build --release --quiet --bin api --bin worker
BIN="${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release"
"$BIN/api" --migrate-only >/dev/null

cleanup() {
  for ((i = 1; i <= ${WORKERS:-1}; i++)); do stop_process "worker-$i"; done
  stop_process api
  redis_forget "$REDIS_KEY_PREFIX"
}
trap cleanup EXIT
start_process api "$BIN/api"
wait_for_http "http://127.0.0.1:$API_PORT/ready" 60 || die "api not ready; see $RUN_DIR/api.log"
for ((i = 1; i <= ${WORKERS:-1}; i++)); do
  WORKER_PORT=$((WORKER_PORT + i - 1)) start_process "worker-$i" "$BIN/worker"
  wait_for_http "http://127.0.0.1:$((WORKER_PORT + i - 1))/ready" 60 || die "worker not ready; see $RUN_DIR/worker-$i.log"
done

mkdir -p "$(dirname "$SCREENSHOT")"
log "dashboard in headless chromium during a sale"
"$TOOLS_VENV/bin/python" tests/browser/dashboard_test.py \
  --api "http://127.0.0.1:$API_PORT" --token "$ADMIN_TOKEN" \
  --chromium "$CHROMIUM_BIN" --screenshot "$SCREENSHOT" "$@"
log "screenshot: $SCREENSHOT"
