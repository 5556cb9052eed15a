#!/usr/bin/env bash
# Repeated fail-over check: one deployment (api, database, topic or key
# prefix), two workers, N sales in a row. In each sale one worker is killed
# with SIGKILL mid-drain and a new one joins; every sale must drain with
# every invariant (the same audit as the tests). Prints, per round, the time
# from the kill to the first new result and to the full drain, then the
# median and maximum.
#
#   scripts/failover-test.sh --rounds 10            # Kafka mode (default)
#   scripts/failover-test.sh --rounds 10 --queue redis
#   scripts/failover-test.sh --rounds 5 --queue both
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

rounds=5
queue=kafka
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --queue) queue="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive number, not $rounds"
# The rstest cases of failover::sales_in_a_row_each_survive_a_killed_worker_and_a_new_one.
case "$queue" in
  redis) filter="sales_in_a_row_each_survive_a_killed_worker_and_a_new_one::case_1_redis" ;;
  kafka) filter="sales_in_a_row_each_survive_a_killed_worker_and_a_new_one::case_2_kafka" ;;
  both) filter="sales_in_a_row" ;;
  *) die "--queue must be kafka, redis or both, not $queue" ;;
esac

ensure_services
[[ "$queue" != redis ]] && ensure_kafka

log "fail-over check: $rounds rounds, $queue mode"
# cargo test, not nextest: many rounds outlast the suite's per-test time limit.
FAILOVER_ROUNDS="$rounds" cargo test --quiet -p worker --test it -- \
  --nocapture --test-threads 1 "failover::$filter"
