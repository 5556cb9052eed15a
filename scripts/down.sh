#!/usr/bin/env bash
# Stops the api and workers scripts/up.sh started (SIGTERM: in-flight work is
# finished and acknowledged). With --services it also stops the nisshi broker
# it started. MySQL and Redis are left running.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
quiet=""
services=""
for a in "$@"; do
  case "$a" in
    --quiet) quiet=1 ;;
    --services) services=1 ;;
    *) die "unknown argument $a" ;;
  esac
done
shopt -s nullglob
for pidfile in "$RUN_DIR"/worker-*.pid "$RUN_DIR"/api.pid; do
  stop_process "$(basename "$pidfile" .pid)"
done
rm -f "$RUN_DIR/queue" "$RUN_DIR/redis-cluster-nodes" "$RUN_DIR"/worker-*.queue
[[ -n "$services" ]] && stop_nisshi
[[ -n "$quiet" ]] || log "stopped"
