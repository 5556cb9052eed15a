//! Redis backend: one stream per coupon plus a record of coupons with work.
//!
//! * Every key of a coupon carries its hash tag (`coupon-issue-events:{42}`,
//!   `coupon-issue-events:{42}:lease`), so one naming scheme serves a single
//!   node and a Redis Cluster (`REDIS_CLUSTER_NODES`), where no script may
//!   touch two slots.
//! * Single node: enqueue is one Lua script, `XADD` to the coupon's stream and
//!   `SADD` of the coupon to the pending set, atomically, so no entry can
//!   exist without its coupon being marked pending. Cluster: enqueue is a
//!   plain `XADD` and the stream itself is the record (see [`cluster`]).
//! * A worker takes a coupon's lease, reads the stream **from its head**,
//!   processes, and only then trims what it committed (`XTRIM MINID`). An
//!   entry therefore stays in the stream until its result is in MySQL: a
//!   worker that dies leaves its entries where the next one starts reading,
//!   in order, and `XLEN` is the queue size.
//! * The lease keeps workers off each other's coupons; ordering does not rest
//!   on it. Two readers of one coupon always see the same head, and the
//!   processor's per-request skip plus the coupon row lock make the slower
//!   one a no-op.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use anyhow::Context;
use redis::aio::ConnectionLike;
use redis::{Script, Value};

use uuid::Uuid;

use crate::domain::{CouponId, CouponIssueEvent, QueueType, QueuedEvent, UserId};
use crate::error::QueueError;
use crate::queue::batch::{self, Batch, Reject};
use crate::queue::gate::{Admitted, Claim, GateEntry, Settled};
use crate::queue::lane::{Enqueued, Lane};

pub mod cluster;
mod dead_letters;
mod grouped;
mod keys;
mod reply;
mod settings;
mod single;
pub mod wake;

pub use dead_letters::DeadLetter;
pub use keys::RedisKeys;
pub use reply::next_entry_id;
use reply::{bytes_field, parse_xrange};
pub use settings::{check_key_prefix, check_url, ClusterNodes, RedisSettings};
use single::SingleNode;

/// Appends a coupon's events in order, each as one enqueue would, in one
/// atomic step: concurrent clicks on a coupon share one script call (see
/// [`grouped`]). Writes each event's entry, the user's gate entry
/// (`KEYS[5]`, see [`crate::queue::gate`]), a wake-up when the stream was
/// empty (see [`wake`]) and, on a single node, the coupon marked pending
/// (`KEYS[6]`; a cluster has no pending set, its streams are the record).
/// Every key but the pending set carries the coupon's hash tag, so on a
/// cluster they share a slot.
///
/// `ARGV[1]` is the coupon, `ARGV[2]` the wake-up channel, then five
/// arguments per event: payload, `1` for a new request (a replayed one was
/// accepted long ago), epoch (empty for none), user and request id (both
/// empty for an event that is not a new click). Answers the coupon's
/// processed count (`KEYS[2]`, see [`RedisQueue::processed`]) and one reply
/// per event, in order, each one string (a single value for the client to
/// decode):
/// * `'<entry id> <stream length with it>'`: added;
/// * `'F <fence>'` when the event's epoch is below the coupon's fence
///   (`KEYS[4]`, invariant S3 of `common::switch`): nothing added;
/// * `'R <gate entry>'` when the user has an entry in the gate (a repeat,
///   an earlier event of the same call included): nothing added;
/// * `'S'` for a new request while the coupon is marked sold out
///   (`KEYS[3]`): nothing added.
static ENQUEUE_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local processed = tonumber(redis.call('HGET', KEYS[2], 'processed') or '0')
local len = redis.call('XLEN', KEYS[1])
local before = len
local fence, sold_out
local out = {}
for i = 3, #ARGV, 5 do
  local epoch, user, reply = ARGV[i + 2], ARGV[i + 3], nil
  if epoch ~= '' then
    fence = fence or tonumber(redis.call('GET', KEYS[4]) or '0')
    if tonumber(epoch) < fence then reply = 'F ' .. tostring(fence) end
  end
  if not reply and user ~= '' then
    local entry = redis.call('HGET', KEYS[5], user)
    if entry then reply = 'R ' .. entry end
  end
  if not reply and ARGV[i + 1] == '1' then
    if sold_out == nil then sold_out = redis.call('EXISTS', KEYS[3]) == 1 end
    if sold_out then reply = 'S' end
  end
  if not reply then
    local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[i])
    len = len + 1
    if user ~= '' then
      redis.call('HSET', KEYS[5], user, 'P ' .. ARGV[i + 4] .. ' ' .. id .. ' c ' .. (processed + len - 1))
    end
    reply = id .. ' ' .. tostring(len)
  end
  out[#out + 1] = reply
end
if len > before then
  if KEYS[6] then redis.call('SADD', KEYS[6], ARGV[1]) end
  if before == 0 then redis.call('PUBLISH', ARGV[2], ARGV[1]) end
end
return {tostring(processed), out}",
    )
});

/// Settles gate entries (`KEYS[1]` of the settle script, `KEYS[4]` of the
/// trim script) from `ARGV[first]` on, in triples `user requestId won`: an
/// entry that still names the request becomes `W` when it won and goes
/// otherwise. Shared by [`TRIM_AND_COUNT`] and [`SETTLE`].
fn settle_lua(gate: &str, first: usize) -> String {
    format!(
        r"
for i = {first}, #ARGV, 3 do
  local entry = redis.call('HGET', {gate}, ARGV[i])
  local id = ARGV[i + 1]
  if entry and string.sub(entry, 3, 2 + #id) == id then
    if ARGV[i + 2] ~= '1' then
      redis.call('HDEL', {gate}, ARGV[i])
    elseif string.sub(entry, 1, 1) == 'C' then
      redis.call('HSET', {gate}, ARGV[i], 'W ' .. id)
    elseif string.sub(entry, 1, 1) == 'P' then
      redis.call('HSET', {gate}, ARGV[i], 'W' .. string.sub(entry, 2))
    end
  end
end"
    )
}

/// Settles gate entries on their own (Kafka mode: see [`settle_lua`]).
static SETTLE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&(settle_lua("KEYS[1]", 1) + "\nreturn 1")));

/// Kafka mode: claims users' gate entries (`KEYS[1]`) before their events
/// are produced, in order, four arguments per claim: user, claim entry, now
/// (ms) and staleness (ms). Answers one string per claim: `'N'` when
/// claimed (the entry written); `'R <entry>'` when the user has one (a
/// repeat, an earlier claim of the same call included); `'T <entry>'` when that entry
/// is a claim older than the staleness: the caller takes it over (it is
/// stamped with now) and sends its event again.
static CLAIM_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for i = 1, #ARGV, 4 do
  local user, now = ARGV[i], tonumber(ARGV[i + 2])
  local entry = redis.call('HGET', KEYS[1], user)
  if not entry then
    redis.call('HSET', KEYS[1], user, ARGV[i + 1])
    out[#out + 1] = 'N'
  else
    local id, at, event = string.match(entry, '^C (%S+) (%d+) (.*)$')
    if id and now - tonumber(at) > tonumber(ARGV[i + 3]) then
      redis.call('HSET', KEYS[1], user, 'C ' .. id .. ' ' .. ARGV[i + 2] .. ' ' .. event)
      out[#out + 1] = 'T ' .. entry
    else
      out[#out + 1] = 'R ' .. entry
    end
  end
end
return out",
    )
});

/// Kafka mode: for each triple `user requestId place` of `ARGV`, replaces
/// the user's claim of that request in the gate (`KEYS[1]`) with its place,
/// or removes it when the place is empty (the broker refused the event).
/// Anything else in an entry is left alone: a worker may have settled it
/// already. Returns how many it replaced or removed.
static PLACE_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for i = 1, #ARGV, 3 do
  local entry = redis.call('HGET', KEYS[1], ARGV[i])
  local id = ARGV[i + 1]
  if entry and string.sub(entry, 1, 3 + #id) == 'C ' .. id .. ' ' then
    if ARGV[i + 2] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
    else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2]) end
    n = n + 1
  end
end
return n",
    )
});

/// Raises the coupon's fence (`KEYS[1]`) to epoch `ARGV[1]`; it never falls.
static RAISE_FENCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
if fence < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1",
    )
});

/// Trims the committed entries and adds how many it removed to the coupon's
/// processed count, atomically: two workers trimming the same range count
/// each entry once. With `ARGV[2]` > 0 it also marks the coupon sold out for
/// that many milliseconds. The gate (`KEYS[4]`) is settled in the same step
/// (see [`settle_lua`]): an entry goes pending to settled as its queue entry
/// goes.
static TRIM_AND_COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local n = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
if n > 0 then redis.call('HINCRBY', KEYS[2], 'processed', n) end
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[3], '1', 'PX', ARGV[2]) end
{}
return n",
        settle_lua("KEYS[4]", 3)
    ))
});

/// How long a worker's sold-out mark stops enqueues: it bridges the time
/// until the api's coupon cache reads the stock at 0 itself (one reload, 1 s
/// by default), and it lapses by itself, so a restock by SQL is honoured
/// within this time even if no api saw the coupon sold out.
pub const SOLD_OUT_MARK: Duration = Duration::from_secs(1);

static FORGET_IF_EMPTY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
return 0",
    )
});

/// Cluster: deletes the coupon's stream once it is empty. One key, so it is
/// atomic with respect to an enqueue (`XADD` to the same key): an entry added
/// before it keeps the stream, one added after it creates it again.
static DELETE_IF_EMPTY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0",
    )
});

static RENEW_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0",
    )
});

static RELEASE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0",
    )
});

/// A stream entry as read, before decoding.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub id: String,
    /// The `event` field; `None` if the entry has none.
    pub payload: Option<Vec<u8>>,
}

/// Connection to the Redis queue, a single node or a cluster. Reconnects
/// by itself after failures.
#[derive(Clone)]
pub struct RedisQueue {
    keys: RedisKeys,
    conn: Conn,
    /// Where workers subscribe to wake-ups: the node, or every seed node.
    nodes: Arc<[String]>,
    /// The tasks that group the hot script calls by coupon (see
    /// [`grouped`]), each started on first use.
    tasks: Arc<Tasks>,
}

#[derive(Default)]
struct Tasks {
    appends: OnceLock<grouped::Grouped<grouped::Appends>>,
    claims: OnceLock<grouped::Grouped<grouped::Claims>>,
    places: OnceLock<grouped::Grouped<grouped::Places>>,
}

/// What [`RedisQueue::gate_entries`] found.
#[derive(Debug)]
pub enum GateRead {
    /// As many entries as the caller's copy holds.
    Unchanged,
    /// More entries than the caller wants to hold.
    TooBig,
    /// Every entry, by user, and the gate's size (`HLEN`: an entry that
    /// does not parse counts too).
    Entries(Vec<(i64, GateEntry)>, usize),
}

/// A gate entry a script answered; one that does not parse is a bad reply.
fn gate_entry(coupon: CouponId, raw: &str) -> Result<GateEntry, QueueError> {
    GateEntry::parse(coupon, raw).ok_or_else(|| QueueError::BadReply(format!("gate entry {raw:?}")))
}

/// A request's place (or the removal of its claim), for [`PLACE_MANY`].
fn placement(user: UserId, request: Uuid, enqueued: Option<&Enqueued>) -> grouped::Placement {
    grouped::Placement {
        user,
        request,
        entry: enqueued.map(|e| GateEntry::pending(request, e)),
    }
}

#[derive(Clone)]
enum Conn {
    Single(Arc<SingleNode>),
    Cluster(Arc<cluster::Cluster>),
}

impl RedisQueue {
    /// Prepares a single-node queue; connects on first use, so it can be
    /// built while Redis is down.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, QueueError> {
        Ok(Self {
            keys: RedisKeys::new(prefix),
            conn: Conn::Single(Arc::new(SingleNode::new(url, timeout)?)),
            nodes: Arc::from([url.to_string()]),
            tasks: Arc::default(),
        })
    }

    /// Connects to a Redis Cluster; fails unless a seed node answers.
    pub async fn cluster(
        nodes: &ClusterNodes,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, QueueError> {
        Ok(Self {
            keys: RedisKeys::new(prefix),
            conn: Conn::Cluster(Arc::new(cluster::Cluster::connect(nodes, timeout).await?)),
            nodes: Arc::from(nodes.urls()),
            tasks: Arc::default(),
        })
    }

    /// The queue the settings name: the cluster of
    /// `REDIS_CLUSTER_NODES` when set (it must answer now), else the single
    /// node of `REDIS_URL` (which may still be down).
    pub async fn connect(settings: &RedisSettings, timeout: Duration) -> anyhow::Result<Self> {
        let prefix = &settings.key_prefix;
        match &settings.cluster_nodes {
            Some(nodes) => Self::cluster(nodes, prefix, timeout)
                .await
                .with_context(|| {
                    format!("connecting to the Redis Cluster REDIS_CLUSTER_NODES={nodes}")
                }),
            None => Self::new(&settings.url, prefix, timeout).context("REDIS_URL"),
        }
    }

    /// A handle for a background task of this queue (see [`grouped`]): it
    /// starts none of its own, so dropping the last of the callers' handles
    /// ends the tasks.
    fn for_task(&self) -> Self {
        Self {
            tasks: Arc::default(),
            ..self.clone()
        }
    }

    /// The task of `cell`, started on first use (see [`grouped`]).
    fn task<'a, C: grouped::Call>(
        &self,
        cell: &'a OnceLock<grouped::Grouped<C>>,
    ) -> &'a grouped::Grouped<C> {
        cell.get_or_init(|| grouped::Grouped::spawn(self.for_task()))
    }

    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    /// Listens for wake-ups (an enqueue into an empty stream) until
    /// `cancel` fires, calling `notify.notify_one()` for each; see [`wake`].
    pub fn spawn_wake_listener(
        &self,
        notify: Arc<tokio::sync::Notify>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(wake::listen(
            self.nodes.clone(),
            self.keys.wake_channel(),
            notify,
            cancel,
        ))
    }

    /// Whether this queue runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// Runs one command or script; on a single node, drops the connection
    /// when it broke so that the next call reconnects.
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: Invocation<'_>,
    ) -> Result<T, QueueError> {
        let result = match &self.conn {
            Conn::Single(node) => invocation.send(&mut node.connection().await?).await,
            Conn::Cluster(cluster) => invocation.send(&mut cluster.connection()).await,
        };
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                // The command was written; a broken connection or a missing
                // answer means Redis may have executed it.
                let lost = e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error();
                if lost {
                    match &self.conn {
                        Conn::Single(node) => node.forget().await,
                        Conn::Cluster(cluster) => cluster.renew().await,
                    }
                    Err(QueueError::Uncertain(e.to_string()))
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// Appends the event to its coupon's stream; returns the entry id and
    /// where the entry stands. `Fenced` when a switch moved the service off
    /// Redis at a later epoch than the event's (nothing added). Does not
    /// look at the repeat gate (see [`RedisQueue::admit`]).
    pub async fn enqueue(&self, event: &CouponIssueEvent) -> Result<Enqueued, QueueError> {
        let admitted = self
            .append(
                event.coupon_id,
                event.to_json().into_bytes(),
                Some(event.epoch),
                true,
                None,
            )
            .await?;
        Ok(admitted.into_new())
    }

    /// A user's click: as [`RedisQueue::enqueue`], but when the user already
    /// has an entry in the coupon's repeat gate nothing is added and that
    /// entry is the answer; otherwise the new request's entry is written in
    /// the same atomic step as the stream entry.
    pub async fn admit(&self, event: &CouponIssueEvent) -> Result<Admitted, QueueError> {
        self.append(
            event.coupon_id,
            event.to_json().into_bytes(),
            Some(event.epoch),
            true,
            Some((event.user_id, event.event_id)),
        )
        .await
    }

    /// Puts an event accepted earlier back (a replayed dead letter, or a
    /// late event forwarded from the other queue): as [`RedisQueue::enqueue`],
    /// but a sold-out mark does not refuse it, since it was accepted before
    /// and must get its result. A replay (`fenced: false`) passes the fence
    /// too: it is redone out of order by nature.
    pub async fn requeue(
        &self,
        event: &CouponIssueEvent,
        fenced: bool,
    ) -> Result<Enqueued, QueueError> {
        let epoch = fenced.then_some(event.epoch);
        let admitted = self
            .append(
                event.coupon_id,
                event.to_json().into_bytes(),
                epoch,
                false,
                None,
            )
            .await?;
        Ok(admitted.into_new())
    }

    /// Appends a raw payload to a coupon's stream, as a producer with a bug
    /// might; used to prove malformed entries are dead-lettered.
    pub async fn enqueue_raw(
        &self,
        coupon: CouponId,
        payload: &[u8],
    ) -> Result<Enqueued, QueueError> {
        let admitted = self
            .append(coupon, payload.to_vec(), None, true, None)
            .await?;
        Ok(admitted.into_new())
    }

    async fn append(
        &self,
        coupon: CouponId,
        payload: Vec<u8>,
        epoch: Option<u64>,
        new_request: bool,
        gate: Option<(UserId, Uuid)>,
    ) -> Result<Admitted, QueueError> {
        let append = grouped::Append {
            payload,
            epoch,
            new_request,
            gate,
        };
        self.task(&self.tasks.appends).call(coupon, append).await
    }

    /// Appends `appends` to the coupon's stream in one script call, in
    /// order (see [`ENQUEUE_MANY`]): an error fails them all (none or, when
    /// uncertain, any of them may be queued), otherwise each has its own
    /// answer.
    async fn append_many(
        &self,
        coupon: CouponId,
        appends: &[&grouped::Append],
    ) -> Result<Vec<Result<Admitted, QueueError>>, QueueError> {
        let mut inv = ENQUEUE_MANY.prepare_invoke();
        inv.key(self.keys.stream(coupon))
            .key(self.keys.progress(coupon))
            .key(self.keys.sold_out(coupon))
            .key(self.keys.fence(coupon))
            .key(self.keys.gate(coupon));
        if !self.is_cluster() {
            inv.key(self.keys.pending());
        }
        inv.arg(coupon.get()).arg(self.keys.wake_channel());
        for a in appends {
            let (user, request) = match a.gate {
                Some((user, request)) => (user.to_string(), request.to_string()),
                None => (String::new(), String::new()),
            };
            inv.arg(&a.payload[..])
                .arg(if a.new_request { "1" } else { "0" })
                .arg(a.epoch.map_or(String::new(), |e| e.to_string()))
                .arg(user)
                .arg(request);
        }
        let (processed, replies): (String, Vec<String>) = self.run(Invocation::Script(inv)).await?;
        let bad = |what: &dyn std::fmt::Debug| {
            QueueError::BadReply(format!("enqueue script answered {what:?}"))
        };
        let number = |s: &str| s.parse::<u64>().map_err(|_| bad(&s));
        let processed = number(&processed)?;
        if replies.len() != appends.len() {
            return Err(bad(&replies));
        }
        Ok(replies
            .into_iter()
            .map(|reply| match reply.split_once(' ') {
                Some(("F", fence)) => Err(QueueError::Fenced(number(fence)?)),
                Some(("R", entry)) => Ok(Admitted::Repeat {
                    entry: gate_entry(coupon, entry)?,
                    progress: Some(processed),
                }),
                None if reply == "S" => Err(QueueError::SoldOut(coupon)),
                // The stream holds exactly the entries not yet processed,
                // this one last: `len - 1` are ahead of it, and its turn
                // comes when the processed count reaches
                // `processed + len - 1`.
                Some((id, len)) => Ok(Admitted::New(Enqueued {
                    position: id.to_owned(),
                    lane: Lane::Coupon(coupon),
                    target: processed + number(len)?.saturating_sub(1),
                    progress: Some(processed),
                })),
                _ => Err(bad(&reply)),
            })
            .collect())
    }

    /// The user's entry in the coupon's repeat gate, if any.
    pub async fn gate_entry(
        &self,
        coupon: CouponId,
        user: UserId,
    ) -> Result<Option<GateEntry>, QueueError> {
        let raw: Option<String> = self
            .run(Invocation::Cmd(
                redis::cmd("HGET")
                    .arg(self.keys.gate(coupon))
                    .arg(user.get()),
            ))
            .await?;
        Ok(raw.and_then(|r| GateEntry::parse(coupon, &r)))
    }

    /// Every entry of the coupon's repeat gate, by user, unless the gate
    /// holds `unless_len` entries (a copy of that size is taken to be
    /// current) or more than `max` (it is then not worth holding in memory).
    pub async fn gate_entries(
        &self,
        coupon: CouponId,
        max: usize,
        unless_len: Option<usize>,
    ) -> Result<GateRead, QueueError> {
        let key = self.keys.gate(coupon);
        let len: usize = self
            .run(Invocation::Cmd(redis::cmd("HLEN").arg(&key)))
            .await?;
        if unless_len == Some(len) {
            return Ok(GateRead::Unchanged);
        }
        if len > max {
            return Ok(GateRead::TooBig);
        }
        let raw: Vec<(i64, String)> = self
            .run(Invocation::Cmd(redis::cmd("HGETALL").arg(&key)))
            .await?;
        Ok(GateRead::Entries(
            raw.into_iter()
                .filter_map(|(user, r)| Some((user, GateEntry::parse(coupon, &r)?)))
                .collect(),
            len,
        ))
    }

    /// Kafka mode: claims `user`'s entry in `coupon`'s gate for the request
    /// `request_id` before its event is produced (see [`CLAIM_MANY`]);
    /// `json` is the event serialised, which the entry keeps.
    pub async fn claim(
        &self,
        coupon: CouponId,
        user: UserId,
        request_id: Uuid,
        json: &str,
        stale: Duration,
    ) -> Result<Claim, QueueError> {
        let now = chrono::Utc::now().timestamp_millis();
        let claim = grouped::ClaimOf {
            user,
            entry: GateEntry::claim(request_id, json, now),
            now,
            stale,
        };
        self.task(&self.tasks.claims).call(coupon, claim).await
    }

    /// Claims gate entries of the coupon in one script call, in order (see
    /// [`CLAIM_MANY`]).
    async fn claim_many(
        &self,
        coupon: CouponId,
        claims: &[&grouped::ClaimOf],
    ) -> Result<Vec<Result<Claim, QueueError>>, QueueError> {
        let mut inv = CLAIM_MANY.prepare_invoke();
        inv.key(self.keys.gate(coupon));
        for c in claims {
            inv.arg(c.user.get())
                .arg(&c.entry)
                .arg(c.now)
                .arg(c.stale.as_millis() as u64);
        }
        let replies: Vec<String> = self.run(Invocation::Script(inv)).await?;
        if replies.len() != claims.len() {
            return Err(QueueError::BadReply(format!("claim answered {replies:?}")));
        }
        Ok(replies
            .into_iter()
            .map(|reply| match reply.split_once(' ') {
                None if reply == "N" => Ok(Claim::Claimed),
                Some(("R", raw)) => Ok(Claim::Repeat(gate_entry(coupon, raw)?)),
                Some(("T", raw)) => Ok(Claim::TakenOver(gate_entry(coupon, raw)?)),
                _ => Err(QueueError::BadReply(format!("claim answered {reply:?}"))),
            })
            .collect())
    }

    /// Kafka mode: records where the claimed request `request` of `user`
    /// went (`Some`), or drops the claim (`None`: the broker refused it).
    /// Leaves an entry that no longer is that claim alone.
    pub async fn place(
        &self,
        coupon: CouponId,
        user: UserId,
        request: Uuid,
        enqueued: Option<&Enqueued>,
    ) -> Result<(), QueueError> {
        self.place_many(coupon, &[&placement(user, request, enqueued)])
            .await
    }

    /// [`Self::place`] off the caller's path: the `202` does not wait for
    /// it (see [`grouped`]). A place that comes late, or never, is safe: a
    /// worker's settling of the entry wins over it, and a claim never placed
    /// is taken over by the user's next click (see `common::queue::gate`).
    pub fn place_later(
        &self,
        coupon: CouponId,
        user: UserId,
        request: Uuid,
        enqueued: Option<&Enqueued>,
    ) {
        self.task(&self.tasks.places)
            .send(coupon, placement(user, request, enqueued));
    }

    async fn place_many(
        &self,
        coupon: CouponId,
        places: &[&grouped::Placement],
    ) -> Result<(), QueueError> {
        let mut inv = PLACE_MANY.prepare_invoke();
        inv.key(self.keys.gate(coupon));
        for p in places {
            inv.arg(p.user.get())
                .arg(p.request.to_string())
                .arg(p.entry.as_deref().unwrap_or(""));
        }
        let _: i64 = self.run(Invocation::Script(inv)).await?;
        Ok(())
    }

    /// Settles the gate entries of requests whose results committed (Kafka
    /// mode; in Redis mode [`RedisQueue::remove_through`] does it).
    pub async fn settle(&self, coupon: CouponId, settled: &[Settled]) -> Result<(), QueueError> {
        if settled.is_empty() {
            return Ok(());
        }
        let mut inv = SETTLE.prepare_invoke();
        inv.key(self.keys.gate(coupon));
        settle_args(&mut inv, settled);
        let _: i64 = self.run(Invocation::Script(inv)).await?;
        Ok(())
    }

    /// Empties the coupon's repeat gate (an operator's reset).
    pub async fn clear_gate(&self, coupon: CouponId) -> Result<(), QueueError> {
        let _: i64 = self
            .run(Invocation::Cmd(
                redis::cmd("DEL").arg(self.keys.gate(coupon)),
            ))
            .await?;
        Ok(())
    }

    /// Raises the fence of every coupon in `coupons` to `epoch` (invariant
    /// S3 of `common::switch`): from then on the enqueue script refuses new
    /// events of an earlier epoch.
    pub async fn raise_fences(&self, coupons: &[CouponId], epoch: u64) -> Result<(), QueueError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        // Owned values in the stream: a borrowing closure here makes the
        // callers' futures fail higher-ranked `Send` checks.
        stream::iter(coupons.to_vec())
            .map(|coupon| {
                let this = self.clone();
                async move {
                    let mut inv = RAISE_FENCE.prepare_invoke();
                    inv.key(this.keys.fence(coupon)).arg(epoch);
                    this.run::<i64>(Invocation::Script(inv)).await
                }
            })
            .buffer_unordered(64)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    /// The coupon's fence: the newest epoch that moved the service off Redis
    /// (0 when none did).
    pub async fn fence(&self, coupon: CouponId) -> Result<u64, QueueError> {
        let n: Option<u64> = self
            .run(Invocation::Cmd(
                redis::cmd("GET").arg(self.keys.fence(coupon)),
            ))
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// Lifts a worker's sold-out mark (the api saw the coupon restocked).
    pub async fn reopen(&self, coupon: CouponId) -> Result<(), QueueError> {
        let _: i64 = self
            .run(Invocation::Cmd(
                redis::cmd("DEL").arg(self.keys.sold_out(coupon)),
            ))
            .await?;
        Ok(())
    }

    /// How many of the coupon's entries have been processed (trimmed after
    /// their results committed), ever; 0 before the first.
    pub async fn processed(&self, coupon: CouponId) -> Result<u64, QueueError> {
        let n: Option<u64> = self
            .run(Invocation::Cmd(
                redis::cmd("HGET")
                    .arg(self.keys.progress(coupon))
                    .arg("processed"),
            ))
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// Entries of the coupon not yet processed.
    pub async fn queue_size(&self, coupon: CouponId) -> Result<u64, QueueError> {
        self.run(Invocation::Cmd(
            redis::cmd("XLEN").arg(self.keys.stream(coupon)),
        ))
        .await
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let _: String = self.run(Invocation::Cmd(&redis::cmd("PING"))).await?;
        Ok(())
    }

    /// Coupons whose streams may hold entries.
    pub async fn pending_coupons(&self) -> Result<Vec<CouponId>, QueueError> {
        if let Conn::Cluster(conn) = &self.conn {
            return cluster::pending_coupons(conn, &self.keys).await;
        }
        let raw: Vec<String> = self
            .run(Invocation::Cmd(
                redis::cmd("SMEMBERS").arg(self.keys.pending()),
            ))
            .await?;
        Ok(raw.iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// Takes the coupon's lease if nobody holds it.
    pub async fn try_lease(
        &self,
        coupon: CouponId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, QueueError> {
        let reply: Option<String> = self
            .run(Invocation::Cmd(
                redis::cmd("SET")
                    .arg(self.keys.lease(coupon))
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64),
            ))
            .await?;
        Ok(reply.is_some())
    }

    /// Extends the lease if `holder` still holds it.
    pub async fn renew_lease(
        &self,
        coupon: CouponId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, QueueError> {
        let mut inv = RENEW_LEASE.prepare_invoke();
        inv.key(self.keys.lease(coupon))
            .arg(holder)
            .arg(ttl.as_millis() as u64);
        let n: i64 = self.run(Invocation::Script(inv)).await?;
        Ok(n == 1)
    }

    /// Gives the lease back if `holder` still holds it.
    pub async fn release_lease(&self, coupon: CouponId, holder: &str) -> Result<(), QueueError> {
        let mut inv = RELEASE_LEASE.prepare_invoke();
        inv.key(self.keys.lease(coupon)).arg(holder);
        let _: i64 = self.run(Invocation::Script(inv)).await?;
        Ok(())
    }

    /// The oldest `count` entries of the coupon's stream, in order.
    pub async fn read_head(
        &self,
        coupon: CouponId,
        count: usize,
    ) -> Result<Vec<RawEntry>, QueueError> {
        self.read_range(coupon, None, count).await
    }

    /// The `count` entries after entry `after` (exclusive), or from the head.
    async fn read_range(
        &self,
        coupon: CouponId,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<RawEntry>, QueueError> {
        let start = after.map_or_else(|| "-".to_string(), |id| format!("({id}"));
        let reply: Value = self
            .run(Invocation::Cmd(
                redis::cmd("XRANGE")
                    .arg(self.keys.stream(coupon))
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count),
            ))
            .await?;
        Ok(parse_xrange(reply)?
            .into_iter()
            .map(|entry| RawEntry {
                payload: bytes_field(&entry, "event"),
                id: entry.id,
            })
            .collect())
    }

    /// The oldest `count` entries of the coupon's stream as a batch, with the
    /// id of the last one (what [`Self::remove_through`] takes once the
    /// batch is committed); `None` when the stream is empty.
    pub async fn next_batch(
        &self,
        coupon: CouponId,
        count: usize,
    ) -> Result<Option<(Batch, String)>, QueueError> {
        self.batch_after(coupon, None, count).await
    }

    /// The `count` entries that follow entry `after` (from the head when
    /// `None`) as a batch, with the id of the last one: a worker reads its
    /// next batch while the current one commits.
    pub async fn batch_after(
        &self,
        coupon: CouponId,
        after: Option<&str>,
        count: usize,
    ) -> Result<Option<(Batch, String)>, QueueError> {
        let entries = self.read_range(coupon, after, count).await?;
        let Some(last) = entries.last().map(|e| e.id.clone()) else {
            return Ok(None);
        };
        let mut batch = Batch::default();
        for entry in entries {
            let payload = entry.payload.unwrap_or_default();
            match batch::decode(&payload, Some(coupon)) {
                Ok(event) => batch.events.push(QueuedEvent {
                    event,
                    queue: QueueType::Redis,
                    position: entry.id,
                }),
                Err(reason) => batch.rejects.push(Reject {
                    position: entry.id,
                    key: None,
                    payload,
                    reason,
                }),
            }
        }
        Ok(Some((batch, last)))
    }

    /// Removes every entry up to and including `last_id`; call only after
    /// their results are committed. `sold_out`: the batch left the coupon
    /// without stock, so enqueues are refused for [`SOLD_OUT_MARK`].
    pub async fn remove_through(
        &self,
        coupon: CouponId,
        last_id: &str,
        sold_out: bool,
        settled: &[Settled],
    ) -> Result<(), QueueError> {
        let threshold = next_entry_id(last_id)
            .ok_or_else(|| QueueError::BadReply(format!("bad stream entry id {last_id}")))?;
        let mark_ms = if sold_out {
            SOLD_OUT_MARK.as_millis() as u64
        } else {
            0
        };
        let mut inv = TRIM_AND_COUNT.prepare_invoke();
        inv.key(self.keys.stream(coupon))
            .key(self.keys.progress(coupon))
            .key(self.keys.sold_out(coupon))
            .key(self.keys.gate(coupon))
            .arg(threshold)
            .arg(mark_ms);
        settle_args(&mut inv, settled);
        let _: i64 = self.run(Invocation::Script(inv)).await?;
        Ok(())
    }

    /// Drops the coupon from the record of pending work if its stream is
    /// empty, in one atomic step (an enqueue cannot slip in between): from
    /// the pending set on a single node; on a cluster the empty stream
    /// itself is deleted. Returns whether it did.
    pub async fn forget_if_empty(&self, coupon: CouponId) -> Result<bool, QueueError> {
        if self.is_cluster() {
            let mut inv = DELETE_IF_EMPTY.prepare_invoke();
            inv.key(self.keys.stream(coupon));
            let n: i64 = self.run(Invocation::Script(inv)).await?;
            return Ok(n == 1);
        }
        let mut inv = FORGET_IF_EMPTY.prepare_invoke();
        inv.key(self.keys.stream(coupon))
            .key(self.keys.pending())
            .arg(coupon.get());
        let n: i64 = self.run(Invocation::Script(inv)).await?;
        Ok(n == 1)
    }
}

/// The settle scripts' arguments: `user requestId won` per request.
fn settle_args(inv: &mut redis::ScriptInvocation<'_>, settled: &[Settled]) {
    for s in settled {
        inv.arg(s.user_id.get())
            .arg(s.request_id.to_string())
            .arg(if s.won { "1" } else { "0" });
    }
}

enum Invocation<'a> {
    Cmd(&'a redis::Cmd),
    Script(redis::ScriptInvocation<'a>),
}

impl Invocation<'_> {
    async fn send<T: redis::FromRedisValue>(
        self,
        conn: &mut impl ConnectionLike,
    ) -> redis::RedisResult<T> {
        match self {
            Invocation::Cmd(cmd) => cmd.query_async(conn).await,
            Invocation::Script(inv) => inv.invoke_async(conn).await,
        }
    }
}
