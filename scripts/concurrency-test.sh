#!/usr/bin/env bash
# Fires N concurrent curl requests at one coupon from distinct users (with -r,
# some users repeat), waits until the queue drains, prints issued count,
# remaining stock and results by status, and exits non-zero if any invariant
# fails: issued = initial - remaining <= initial; no user holds the coupon
# twice; every accepted request has exactly one result and no other result
# exists; every SUCCESS precedes every OUT_OF_STOCK in queue order.
#
#   scripts/concurrency-test.sh [-c COUPON] [-n REQUESTS] [-r REPEATS]
#                               [-s STOCK] [-p PARALLEL] [--no-reset] [-t TIMEOUT]
#
# Defaults: coupon 1, 1000 requests, 0 repeats, stock 100 (set with
# scripts/reset-db.sh first; --no-reset keeps the current stock and results),
# 100 requests in flight, 120 s to drain.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

coupon=1 requests=1000 repeats=0 stock=100 parallel=100 reset=1 timeout=120
API="${API_URL:-http://127.0.0.1:${API_PORT:-9090}}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    -c) coupon=$2; shift 2 ;;
    -n) requests=$2; shift 2 ;;
    -r) repeats=$2; shift 2 ;;
    -s) stock=$2; shift 2 ;;
    -p) parallel=$2; shift 2 ;;
    -t) timeout=$2; shift 2 ;;
    --no-reset) reset=""; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
done
(( repeats < requests )) || die "-r must be smaller than -n"
distinct=$((requests - repeats))

curl -fsS -o /dev/null "$API/health" || die "api not reachable at $API (scripts/up.sh starts it)"
if [[ -n "$reset" ]]; then
  "$ROOT_DIR/scripts/reset-db.sh" "$coupon" "$stock" >/dev/null
fi
initial=$(mysql_app -N -e "SELECT stock FROM coupon WHERE coupon_id = $coupon")
[[ -n "$initial" ]] || die "coupon $coupon does not exist"
before=$(mysql_app -N -e "SELECT COUNT(*) FROM coupon_issue_result WHERE coupon_id = $coupon")
issued_before=$(mysql_app -N -e "SELECT COUNT(*) FROM user_coupon WHERE coupon_id = $coupon")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Users 1..distinct once each, then the first `repeats` users again, shuffled.
{ seq 1 "$distinct"; if ((repeats > 0)); then seq 1 "$repeats" | awk -v d="$distinct" '{print ($1 - 1) % d + 1}'; fi; } |
  shuf >"$work/users"

log "firing $requests requests ($distinct distinct users) at coupon $coupon, $parallel at a time"
start=$(date +%s.%N)
start_utc=$(date -u -d "@$start" '+%F %T.%6N')
# One curl running the requests in parallel, each answer in a file of its
# own (answers written to one shared stream would interleave).
mkdir "$work/r"
awk -v api="$API" -v c="$coupon" -v dir="$work/r" \
  '{printf "url = \"%s/api/coupons/%s/issue?userId=%s\"\noutput = \"%s/%d\"\n", api, c, $1, dir, NR}' \
  "$work/users" >"$work/curl.conf"
curl -s --parallel --parallel-immediate --parallel-max "$parallel" -X POST -K "$work/curl.conf" \
  -w '%{filename_effective} %{http_code}\n' >"$work/codes" || true
sent=$(date +%s.%N)
while read -r file code; do
  printf '%s HTTP%s\n' "$(cat "$file" 2>/dev/null)" "$code"
done <"$work/codes" >"$work/responses"

grep ' HTTP202$' "$work/responses" | grep -o '"requestId":"[^"]*"' | cut -d'"' -f4 >"$work/accepted" || true
accepted=$(wc -l <"$work/accepted")
sold_out=$(grep -c '"SOLD_OUT".* HTTP409$' "$work/responses" || true)
rejected=$((requests - accepted - sold_out))
log "accepted $accepted, sold out $sold_out, refused $rejected in $(awk -v a="$start" -v b="$sent" 'BEGIN{printf "%.2f", b-a}') s"
if ((rejected > 0)); then
  grep -v -e ' HTTP202$' -e ' HTTP409$' "$work/responses" | sed 's/ HTTP/ -> /' | sort | uniq -c | head -5 >&2
fi

log "waiting for the queue to drain"
deadline=$(($(date +%s) + timeout))
while :; do
  done_count=$(mysql_app -N -e "SELECT COUNT(*) FROM coupon_issue_result WHERE coupon_id = $coupon")
  (( done_count - before >= accepted )) && break
  (( $(date +%s) < deadline )) || { echo "FAIL: only $((done_count - before)) of $accepted results after ${timeout}s" >&2; exit 1; }
  sleep 0.2
done
drained=$(date +%s.%N)

# Accepted ids into a table for exact set comparisons.
{
  echo "CREATE TEMPORARY TABLE accepted (request_id CHAR(36) PRIMARY KEY);"
  awk 'NR%500==1{if(NR>1)print ";"; printf "INSERT INTO accepted VALUES "} {printf "%s(\x27%s\x27)", (NR%500==1?"":","), $1} END{if(NR)print ";"}' "$work/accepted"
  cat <<SQL
SELECT 'remaining', stock FROM coupon WHERE coupon_id = $coupon;
SELECT 'issued', COUNT(*) FROM user_coupon WHERE coupon_id = $coupon;
SELECT 'dup_holders', COUNT(*) FROM (SELECT user_id FROM user_coupon WHERE coupon_id = $coupon GROUP BY user_id HAVING COUNT(*) > 1) d;
SELECT 'accepted_with_result', COUNT(*) FROM accepted a JOIN coupon_issue_result r ON r.request_id = a.request_id;
SELECT 'results_not_accepted', COUNT(*) FROM coupon_issue_result r LEFT JOIN accepted a ON a.request_id = r.request_id
  WHERE r.coupon_id = $coupon AND a.request_id IS NULL AND r.requested_at >= '$start_utc';
SELECT 'success_without_holder', COUNT(*) FROM coupon_issue_result r JOIN accepted a ON a.request_id = r.request_id
  LEFT JOIN user_coupon u ON u.request_id = r.request_id WHERE r.status = 'SUCCESS' AND u.request_id IS NULL;
SELECT 'order_violations', COALESCE(MAX(CASE WHEN r.status = 'SUCCESS' THEN CAST(SUBSTRING_INDEX(REPLACE(r.queue_position, ':', '-'), '-', 1) AS DECIMAL(40,0)) * 100000000000000000000 + CAST(SUBSTRING_INDEX(REPLACE(r.queue_position, ':', '-'), '-', -1) AS DECIMAL(40,0)) END)
                                   > MIN(CASE WHEN r.status = 'OUT_OF_STOCK' THEN CAST(SUBSTRING_INDEX(REPLACE(r.queue_position, ':', '-'), '-', 1) AS DECIMAL(40,0)) * 100000000000000000000 + CAST(SUBSTRING_INDEX(REPLACE(r.queue_position, ':', '-'), '-', -1) AS DECIMAL(40,0)) END), 0)
  FROM coupon_issue_result r JOIN accepted a ON a.request_id = r.request_id;
SELECT CONCAT('status_', r.status), COUNT(*) FROM coupon_issue_result r JOIN accepted a ON a.request_id = r.request_id GROUP BY r.status;
SQL
} >"$work/audit.sql"
mysql_app -N <"$work/audit.sql" >"$work/audit"
get() { awk -v k="$1" '$1==k{print $2}' "$work/audit"; }

remaining=$(get remaining)
issued=$(($(get issued) - issued_before))
echo
echo "coupon $coupon: initial stock $initial, requests $requests, accepted $accepted, answered SOLD_OUT $sold_out"
echo "  issued           $issued"
echo "  remaining stock  $remaining"
echo "  results by status:"
grep '^status_' "$work/audit" | sed 's/^status_//' | awk '{printf "    %-18s %s\n", $1, $2}'
echo "  sent in $(awk -v a="$start" -v b="$sent" 'BEGIN{printf "%.2f", b-a}') s, drained in $(awk -v a="$start" -v b="$drained" 'BEGIN{printf "%.2f", b-a}') s"

fail=0
check() { if eval "$2"; then echo "  ok    $1"; else echo "  FAIL  $1"; fail=1; fi; }
echo "invariants:"
check "issued ($issued) = initial ($initial) - remaining ($remaining)" "(( issued == initial - remaining ))"
check "issued <= initial stock" "(( issued <= initial ))"
check "no user holds the coupon twice" "(( $(get dup_holders) == 0 ))"
check "every accepted request has exactly one result" "(( $(get accepted_with_result) == accepted ))"
check "no result without an accepted request" "(( $(get results_not_accepted) == 0 ))"
check "every SUCCESS has its user_coupon row" "(( $(get success_without_holder) == 0 ))"
check "first-come: every SUCCESS precedes every OUT_OF_STOCK" "(( $(get order_violations) == 0 ))"
check "every request accepted or answered SOLD_OUT" "(( rejected == 0 ))"
exit $fail
