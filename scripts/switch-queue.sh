#!/usr/bin/env bash
# Moves the running service to the other queue (PUT /api/admin/queue): new
# requests go to TARGET from now on, and each coupon's requests still waiting
# in the old queue are processed before any of its new ones. Workers of the
# old queue keep draining it; stop them once its lag is 0.
#
# On the demo of scripts/up.sh it first starts what TARGET needs: the Kafka
# broker, and a worker of TARGET when none runs. Against any other
# deployment, set API and ADMIN_TOKEN and run the workers yourself.
#
#   scripts/switch-queue.sh kafka|redis
#   API=http://10.0.0.5:9090 ADMIN_TOKEN=... scripts/switch-queue.sh kafka
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $# -eq 1 ]] || die "usage: scripts/switch-queue.sh kafka|redis"
target=$1
[[ "$target" == redis || "$target" == kafka ]] || die "the target must be redis or kafka, not $target"
API="${API:-http://127.0.0.1:${API_PORT:-9090}}"
ADMIN_TOKEN="${ADMIN_TOKEN:-dev-admin-token}"

if [[ -f "$RUN_DIR/queue" ]]; then
  # The local demo: make sure the target can take requests and be drained.
  [[ "$target" == kafka ]] && ensure_kafka
  shopt -s nullglob
  running=""
  for f in "$RUN_DIR"/worker-*.queue; do
    pid="$RUN_DIR/$(basename "$f" .queue).pid"
    [[ "$(cat "$f")" == "$target" && -f "$pid" ]] && kill -0 "$(cat "$pid")" 2>/dev/null && running=1
  done
  [[ -n "$running" ]] || "$ROOT_DIR/scripts/add-worker.sh" --queue "$target"
fi

log "switching $API to $target"
answer=$(curl -sS -X PUT "$API/api/admin/queue" -H "Authorization: Bearer $ADMIN_TOKEN" \
  -H 'Content-Type: application/json' -d "{\"type\":\"$target\"}" -w '\n%{http_code}') ||
  die "the api at $API does not answer"
code=${answer##*$'\n'}
body=${answer%$'\n'*}
echo "$body"
[[ "$code" == 200 ]] || die "switch refused ($code); the active queue is unchanged"
[[ -f "$RUN_DIR/queue" ]] && echo "$target" >"$RUN_DIR/queue"

# Settled: no api enqueues into the old queue any more.
for ((i = 0; i < 150; i++)); do
  state=$(curl -fsS "$API/api/admin/queue") || die "the api at $API does not answer"
  if [[ "$state" != *'"settledAt":null'* ]]; then
    log "settled: every api enqueues into $target; the old queue drains first, coupon by coupon"
    echo "$state"
    exit 0
  fi
  sleep 0.1
done
die "the switch has not settled after 15 s: an api that cannot reach MySQL holds it (see GET $API/api/admin/queue)"
