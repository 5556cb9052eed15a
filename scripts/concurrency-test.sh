#!/usr/bin/env bash
# Fires N concurrent curl requests at one coupon from distinct users (with -r,
# some users repeat), waits until the queue drains, prints issued count,
# remaining stock and results by status, and exits non-zero if any invariant
# fails: issued = initial - remaining <= initial; no user holds the coupon
# twice; every accepted request has exactly one result and no other result
# exists; every SUCCESS precedes every OUT_OF_STOCK in queue order. The
# checks are the tests' own (common::audit), run by `loadgen audit`.
#
#   scripts/concurrency-test.sh [-c COUPON] [-n REQUESTS] [-r REPEATS]
#                               [-s STOCK] [-p PARALLEL] [--no-reset] [-t TIMEOUT]
#
# Defaults: coupon 1, 1000 requests, 0 repeats, stock 100 (set with
# scripts/reset-db.sh first; --no-reset keeps the current stock and results),
# 100 requests in flight, 120 s to drain.
#
# Timings are the service's, not this script's: "sent in" runs from the
# first request to curl's exit (the last answer), "drained in" from the first
# request to the processed_at of the sale's last result (the worker's clock,
# UTC), so reading the answers and polling MySQL are counted in neither.
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
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
done
(( repeats < requests )) || die "-r must be smaller than -n"
distinct=$((requests - repeats))

curl -fsS -o /dev/null "$API/health" || die "api not reachable at $API (scripts/up.sh starts it)"
(cd "$ROOT_DIR" && cargo build --release --quiet --bin loadgen)
LOADGEN="${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/loadgen"
if [[ -n "$reset" ]]; then
  "$ROOT_DIR/scripts/reset-db.sh" "$coupon" "$stock" >/dev/null
fi
initial=$(mysql_app -N -e "SELECT stock FROM coupon WHERE coupon_id = $coupon")
[[ -n "$initial" ]] || die "coupon $coupon does not exist"

# Work files, among them a file per answer, on tmpfs (/dev/shm) when it has
# room for a page per answer and TMPDIR is not set. Curl's 20,000 requests
# took 7.8 s writing their answers on ext4 (other builds running), 1.7 s on
# tmpfs and 1.1 s discarding them: on disk, "sent in" measured the disk.
tmp_parent=${TMPDIR:-/tmp}
if [[ -z "${TMPDIR:-}" && -d /dev/shm && -w /dev/shm ]] &&
  (( $(df -Pk /dev/shm | awk 'NR == 2 {print $4}') > 8 * requests + 65536 )); then
  tmp_parent=/dev/shm
fi
work=$(mktemp -d -p "$tmp_parent")
trap 'rm -rf "$work"' EXIT
# Results of earlier sales (with --no-reset): left out of this sale's audit.
mysql_app -N -e "SELECT request_id FROM coupon_issue_result WHERE coupon_id = $coupon" >"$work/earlier"
before=$(wc -l <"$work/earlier")
# Users 1..distinct once each, then the first `repeats` users again, shuffled.
{ seq 1 "$distinct"; if ((repeats > 0)); then seq 1 "$repeats" | awk -v d="$distinct" '{print ($1 - 1) % d + 1}'; fi; } |
  shuf >"$work/users"

log "firing $requests requests ($distinct distinct users) at coupon $coupon, $parallel at a time"
# One curl running the requests in parallel, each answer in a file of its
# own (answers written to one shared stream would interleave), and one line
# per transfer with its status code and file.
mkdir "$work/r"
awk -v api="$API" -v c="$coupon" -v dir="$work/r" \
  '{printf "url = \"%s/api/coupons/%s/issue?userId=%s\"\noutput = \"%s/%d\"\n", api, c, $1, dir, NR}' \
  "$work/users" >"$work/curl.conf"
start=$(date +%s.%N)
curl -s --parallel --parallel-immediate --parallel-max "$parallel" -X POST -K "$work/curl.conf" \
  -w '%{http_code} %{filename_effective}\n' >"$work/codes" || true
sent=$(date +%s.%N)
# The workers' processed_at is UTC: the sale's start on the same clock.
start_utc=$(date -u -d "@$start" '+%Y-%m-%d %H:%M:%S.%6N')
# "BODY HTTPCODE" per answer, one awk for all of them (a process per answer
# took tens of seconds for 20,000). A transfer that failed has no file: an
# empty body, code 000.
awk '{
  file = substr($0, index($0, " ") + 1); body = ""
  while ((getline line < file) > 0) body = body line
  close(file)
  print body " HTTP" $1
}' "$work/codes" >"$work/responses"
# Removed now, seconds old: on disk, once written back (after ~30 s), 20,000
# small files took 30 s to delete here (ext4 mounted with discard).
rm -rf "$work/r"

grep ' HTTP202$' "$work/responses" | grep -o '"requestId":"[^"]*"' | cut -d'"' -f4 >"$work/accepted" || true
accepted=$(wc -l <"$work/accepted")
sold_out=$(grep -c '"SOLD_OUT".* HTTP409$' "$work/responses" || true)
# A repeat click of a user whose request is pending or won: answered 200
# with that request ("repeat": true), nothing queued.
repeat_answers=$(grep -c '"repeat":true.* HTTP200$' "$work/responses" || true)
rejected=$((requests - accepted - repeat_answers - sold_out))
log "accepted $accepted, repeats answered $repeat_answers, sold out $sold_out, refused $rejected in $(awk -v a="$start" -v b="$sent" 'BEGIN{printf "%.2f", b-a}') s"
if ((repeat_answers > 0)); then
  echo "  a repeat click's answer (200): $(grep -m1 ' HTTP200$' "$work/responses" | sed 's/ HTTP200$//')"
fi
if ((rejected > 0)); then
  grep -v -e ' HTTP202$' -e ' HTTP409$' -e ' HTTP200$' "$work/responses" | sed 's/ HTTP/ -> /' | sort | uniq -c | head -5 >&2
fi

log "waiting for the queue to drain"
deadline=$(($(date +%s) + timeout))
while :; do
  done_count=$(mysql_app -N -e "SELECT COUNT(*) FROM coupon_issue_result WHERE coupon_id = $coupon")
  (( done_count - before >= accepted )) && break
  (( $(date +%s) < deadline )) || { echo "FAIL: only $((done_count - before)) of $accepted results after ${timeout}s" >&2; exit 1; }
  sleep 0.2
done
# The sale's last result, on the workers' clock (earlier sales' results,
# with --no-reset, were written before this one started).
drained_s=0
if ((accepted > 0)); then
  drained_s=$(mysql_app -N -e "SELECT TIMESTAMPDIFF(MICROSECOND, '$start_utc', MAX(processed_at)) / 1e6
    FROM coupon_issue_result WHERE coupon_id = $coupon")
fi

echo
echo "coupon $coupon: initial stock $initial, requests $requests, accepted $accepted, repeats answered $repeat_answers, answered SOLD_OUT $sold_out"
echo "  sent in $(awk -v a="$start" -v b="$sent" 'BEGIN{printf "%.2f", b-a}') s, drained in $(awk -v d="$drained_s" 'BEGIN{printf "%.2f", d}') s"
fail=0
# The database mysql_app reads (compose-check points MYSQL_PORT elsewhere).
"$LOADGEN" audit --database-url "$(app_database_url)" \
  --coupon "$coupon" --stock "$initial" --accepted "$work/accepted" --earlier "$work/earlier" || fail=1
if ((rejected > 0)); then
  echo "  FAIL     $rejected requests were neither accepted, answered as repeats nor answered SOLD_OUT"
  fail=1
fi
exit $fail
