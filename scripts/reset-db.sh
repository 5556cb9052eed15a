#!/usr/bin/env bash
# Operators' reset between sales: sets coupon COUPON's stock (and total) to
# STOCK, creating the coupon if needed, and clears its issued rows and
# results, and empties its repeat gate (both modes keep it in Redis). In
# Redis mode its queued, unprocessed requests are dropped too; in
# Kafka mode the log cannot be edited, so let the queue drain first. Waits
# two of the api's coupon-cache reloads before returning (see the end).
#
#   scripts/reset-db.sh COUPON STOCK
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $# -eq 2 ]] || die "usage: scripts/reset-db.sh COUPON STOCK"
coupon=$1 stock=$2
[[ "$coupon" =~ ^[1-9][0-9]{0,17}$ ]] || die "COUPON must be a positive integer"
[[ "$stock" =~ ^[0-9]{1,9}$ ]] || die "STOCK must be a non-negative integer"

# The coupon's row first, as the workers take it: a batch in flight
# finishes before the holders go, and the raised holders_version tells every
# worker that what it remembers of them is gone.
mysql_app <<SQL
START TRANSACTION;
INSERT INTO coupon (coupon_id, name, total_quantity, stock)
  VALUES ($coupon, 'coupon $coupon', $stock, $stock)
  ON DUPLICATE KEY UPDATE total_quantity = $stock, stock = $stock,
    holders_version = holders_version + 1;
DELETE FROM user_coupon WHERE coupon_id = $coupon;
DELETE FROM coupon_issue_result WHERE coupon_id = $coupon;
COMMIT;
SQL
prefix="${REDIS_KEY_PREFIX:-}"
nodes="${REDIS_CLUSTER_NODES:-$(cat "$RUN_DIR/redis-cluster-nodes" 2>/dev/null || true)}"
if command -v redis-cli >/dev/null 2>&1; then
  if [[ -n "$nodes" ]]; then
    # Any node will do: -c follows the cluster to the coupon's master.
    seed=${nodes%%,*} seed=${seed#redis://}
    redis_cli=(redis-cli -c -h "${seed%:*}" -p "${seed##*:}")
  else
    redis_cli=(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT")
  fi
  # The queued requests, and the repeat gate: every user may ask again.
  "${redis_cli[@]}" DEL "${prefix}coupon-issue-events:{$coupon}" "${prefix}coupon-issue-events:{$coupon}:gate" >/dev/null || true
fi
# A running api re-reads which coupons are sold out every
# COUPON_CACHE_REFRESH_MS (1 s by default; set it here too if the api runs
# with another value): wait two reloads, so that the first request after the
# reset does not meet a SOLD_OUT the api still remembers.
sleep "$(awk -v ms="${COUPON_CACHE_REFRESH_MS:-1000}" 'BEGIN{printf "%.3f", 2 * ms / 1000 + 0.2}')"
echo "coupon $coupon reset: stock $stock, no holders, no results"
