#!/usr/bin/env bash
# Puts every dead letter that is a valid issue event back on its coupon's
# queue (same request id); the worker decides it again and its SYSTEM_ERROR
# result is replaced. Undecodable dead letters are left for inspection.
# Uses the queue mode of the running stack (scripts/up.sh) unless
# APP_QUEUE_TYPE is set.
#
#   scripts/replay-dlq.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [[ -z "${APP_QUEUE_TYPE:-}" && -f "$RUN_DIR/queue" ]]; then
  export APP_QUEUE_TYPE="$(cat "$RUN_DIR/queue")"
fi
(cd "$ROOT_DIR" && cargo build --release --quiet --bin worker)
WORKER_PORT=0 "${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/worker" --replay-dead-letters
