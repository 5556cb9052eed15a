//! Redis Cluster specifics: connecting, and finding the coupons with pending
//! work. A cluster has no cross-slot scripts, so there is no global set of
//! pending coupons: a coupon's stream exists exactly while it holds entries
//! (enqueue is a plain `XADD`; a drained stream is deleted by a one-key
//! script), and workers find the streams with `SCAN ... TYPE stream` on
//! every master.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;

use super::keys::RedisKeys;
use super::settings::ClusterNodes;
use crate::domain::CouponId;
use crate::error::QueueError;

/// Keys looked at per `SCAN` call on one master.
const SCAN_COUNT: usize = 1000;

/// Replaced at most this often.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The crate's cluster connection (it follows slot moves and reconnects by
/// itself), replaced by a fresh one after a lost answer: under load, the
/// crate's connection (redis 1.8) sometimes never heals its link to a master
/// that was restarted, and every command for that master's slots times out.
pub(super) struct Cluster {
    client: ClusterClient,
    timeout: Duration,
    conn: RwLock<ClusterConnection>,
    /// When it was last replaced; held while a replacement is under way.
    renewed: tokio::sync::Mutex<Instant>,
}

impl Cluster {
    /// Connects; fails when no seed node answers as a cluster member
    /// (unreachable, or not in cluster mode).
    pub(super) async fn connect(
        nodes: &ClusterNodes,
        timeout: Duration,
    ) -> Result<Self, QueueError> {
        let client = ClusterClient::builder(nodes.urls().to_vec())
            .connection_timeout(timeout)
            // Also bounds each command with its retries and redirections.
            .response_timeout(timeout)
            .build()?;
        let conn = Self::fresh(&client, timeout).await?;
        Ok(Self {
            client,
            timeout,
            conn: RwLock::new(conn),
            renewed: tokio::sync::Mutex::new(Instant::now()),
        })
    }

    async fn fresh(
        client: &ClusterClient,
        timeout: Duration,
    ) -> Result<ClusterConnection, QueueError> {
        // The crate's connect has no overall limit of its own.
        tokio::time::timeout(timeout * 2, client.get_async_connection())
            .await
            .map_err(|_| QueueError::Unavailable("no cluster node answered".into()))?
            .map_err(Into::into)
    }

    pub(super) fn connection(&self) -> ClusterConnection {
        self.conn.read().expect("cluster connection lock").clone()
    }

    /// Replaces the connection after a lost answer, at most once a second;
    /// callers that find a replacement under way do not wait for it.
    pub(super) async fn renew(&self) {
        let Ok(mut renewed) = self.renewed.try_lock() else {
            return;
        };
        if renewed.elapsed() < RENEW_EVERY {
            return;
        }
        *renewed = Instant::now();
        match Self::fresh(&self.client, self.timeout).await {
            Ok(conn) => *self.conn.write().expect("cluster connection lock") = conn,
            Err(e) => tracing::warn!(error = ?e, "could not reconnect to the Redis Cluster"),
        }
    }
}

/// `(host, port)` of every master, from `CLUSTER SLOTS`.
async fn masters(conn: &mut ClusterConnection) -> Result<Vec<(String, u16)>, QueueError> {
    let reply = conn
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let bad = || QueueError::BadReply("CLUSTER SLOTS".into());
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut out: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        // [start, end, [host, port, id, ...], replicas...]
        let Value::Array(parts) = range else {
            return Err(bad());
        };
        let Some(Value::Array(master)) = parts.get(2) else {
            return Err(bad());
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => return Err(bad()),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return Err(bad());
        };
        let node = (host, u16::try_from(*port).map_err(|_| bad())?);
        if !out.contains(&node) {
            out.push(node);
        }
    }
    Ok(out)
}

/// Coupons whose stream exists on some master. A master that does not answer
/// is skipped (its coupons wait for the next poll) unless none answers.
pub(super) async fn pending_coupons(
    cluster: &Cluster,
    keys: &RedisKeys,
) -> Result<Vec<CouponId>, QueueError> {
    let mut conn = cluster.connection();
    let masters = masters(&mut conn).await?;
    let pattern = keys.stream_pattern();
    let mut coupons = Vec::new();
    let mut last_err = None;
    let mut answered = 0;
    for (host, port) in masters {
        match scan_master(&mut conn, &host, port, &pattern, keys).await {
            Ok(found) => {
                answered += 1;
                coupons.extend(found);
            }
            Err(e) => {
                tracing::warn!(error = ?e, %host, port, "could not scan a cluster master");
                last_err = Some(e);
            }
        }
    }
    // A slot moving during the scan can show a stream twice.
    coupons.sort_unstable();
    coupons.dedup();
    match last_err {
        Some(e) if answered == 0 => Err(e),
        _ => Ok(coupons),
    }
}

async fn scan_master(
    conn: &mut ClusterConnection,
    host: &str,
    port: u16,
    pattern: &str,
    keys: &RedisKeys,
) -> Result<Vec<CouponId>, QueueError> {
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: host.to_string(),
        port,
    });
    let mut cursor = 0u64;
    let mut coupons = Vec::new();
    loop {
        let reply = conn
            .route_command(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .arg("TYPE")
                    .arg("stream")
                    .clone(),
                route.clone(),
            )
            .await?;
        let (next, found): (u64, Vec<String>) = redis::from_redis_value(reply)
            .map_err(|e| QueueError::BadReply(format!("SCAN: {e}")))?;
        coupons.extend(found.iter().filter_map(|k| keys.coupon_of_stream(k)));
        if next == 0 {
            return Ok(coupons);
        }
        cursor = next;
    }
}
