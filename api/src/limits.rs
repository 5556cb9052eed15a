//! Rate limits at the door: `RATE_LIMIT_PER_IP` and `RATE_LIMIT_PER_USER`
//! issue calls per second, each with a burst of as many; `0` (the default)
//! turns a limit off. A call over a limit is answered `429 RATE_LIMITED`
//! with `Retry-After` (whole seconds, at least 1) and goes no further.
//!
//! - **Only the issue call is limited.** Lookups, coupon reads and the
//!   operations endpoints are not: they enqueue nothing, and a waiting
//!   client's polls should not use up its own issue budget.
//! - **Order.** The limits are checked after the ids are parsed and the
//!   user is authenticated (`400` → `401`/`403` → `429`), the IP's first;
//!   the user's limit keys on the resolved user (the token's `sub` when
//!   tokens are required). A call refused for its IP does not count
//!   against its user. Without user tokens the user is whatever `userId`
//!   the call names, so only the IP limit holds back a client that names
//!   many users.
//! - **In-process, per api instance** (GCRA cells of the `governor` crate):
//!   the accept path pays no extra Redis round trip, and a limit holds even
//!   while Redis is cut off. The price: each instance counts alone, so `N`
//!   api instances behind a balancer let a user (or an IP) through at up to
//!   `N` times the rate. Set the limits for one instance's share, or let a
//!   balancer with affinity keep a client on one instance.
//! - **Client IP**: the TCP peer's address, or, when the peer is one of
//!   `TRUSTED_PROXIES`, the address its `X-Forwarded-For` names (see
//!   [`client_ip`]). IPv6 clients are limited per `/64`, the block one
//!   subscriber gets, so a client cannot step around its limit by changing
//!   addresses within it.
//! - **Memory**: a key is forgotten once its state is that of a fresh key
//!   (one second after its last call); a background task sweeps every
//!   [`SWEEP_EVERY`], so the limiters hold about the keys seen in the last
//!   few seconds.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use common::domain::UserId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use crate::door::Outcome;
use crate::error::ApiError;
use crate::state::AppState;

/// How often keys whose state is fresh again are dropped.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The limit settings, as `crate::config` reads them.
#[derive(Debug, Clone, Default)]
pub struct LimitSettings {
    /// Issue calls per second (and burst) per user; 0 = off.
    pub per_user: u32,
    /// Issue calls per second (and burst) per client IP; 0 = off.
    pub per_ip: u32,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// The api's rate limiters; cheap to clone.
#[derive(Clone, Default)]
pub struct Limits {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    per_user: Option<DefaultKeyedRateLimiter<UserId>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trusted_proxies: Vec<IpNet>,
    clock: DefaultClock,
}

impl Limits {
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                per_user: limiter(settings.per_user),
                per_ip: limiter(settings.per_ip),
                trusted_proxies: settings.trusted_proxies.clone(),
                clock: DefaultClock::default(),
            }),
        }
    }

    /// Lets one issue call of `user` from `ip` through, or answers `429`.
    /// `ip` is `None` when the server does not know the peer (a router
    /// served without connect info): then only the user's limit applies.
    pub fn admit(&self, ip: Option<IpAddr>, user: UserId) -> Result<(), ApiError> {
        let inner = &self.inner;
        if let (Some(limiter), Some(ip)) = (&inner.per_ip, ip) {
            limiter
                .check_key(&limit_key(ip))
                .map_err(|no| refused("IP address", no.wait_time_from(inner.clock.now())))?;
        }
        if let Some(limiter) = &inner.per_user {
            limiter
                .check_key(&user)
                .map_err(|no| refused("user", no.wait_time_from(inner.clock.now())))?;
        }
        Ok(())
    }

    fn ip_limited(&self) -> bool {
        self.inner.per_ip.is_some()
    }

    /// Drops the keys whose state is fresh again, every [`SWEEP_EVERY`]
    /// until `cancel` fires.
    pub fn spawn_sweeper(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cancel.cancelled() => return,
                }
                if let Some(l) = &inner.per_user {
                    l.retain_recent();
                    l.shrink_to_fit();
                    metrics::gauge!("api_rate_limit_keys", "limit" => "user").set(l.len() as f64);
                }
                if let Some(l) = &inner.per_ip {
                    l.retain_recent();
                    l.shrink_to_fit();
                    metrics::gauge!("api_rate_limit_keys", "limit" => "ip").set(l.len() as f64);
                }
            }
        })
    }
}

/// A limiter of `rate` calls per second per key, with a burst of as many;
/// `None` for 0 (off).
fn limiter<K: Clone + Eq + std::hash::Hash>(rate: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(rate).map(|r| governor::RateLimiter::keyed(Quota::per_second(r)))
}

fn refused(scope: &str, wait: Duration) -> ApiError {
    Outcome::RateLimited.count();
    ApiError::rate_limited(scope, wait)
}

/// What an IP is limited as: an IPv4 address, or the `/64` of an IPv6 one.
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

/// The client's address. The peer's, unless the peer is a trusted proxy:
/// then `X-Forwarded-For` is read from its right end (the entry the nearest
/// proxy wrote) leftwards past the trusted proxies, and the first address
/// that is not one is the client. Entries further left were written by the
/// client or untrusted hops and are never believed, so a client cannot
/// choose its own key. When every entry is a trusted proxy, the left-most
/// is taken; an entry that is not an address stops the walk at the last
/// address read.
pub fn client_ip(peer: IpAddr, forwarded_for: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let hops = forwarded_for
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for hop in hops.rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// The client IP of a call, when an IP limit is set and the server passed
/// the peer's address (`ConnectInfo`); `None` otherwise.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if !state.limits.ip_limited() {
            return Ok(ClientIp(None));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let trusted = &state.limits.inner.trusted_proxies;
        Ok(ClientIp(
            peer.map(|peer| client_ip(peer, &parts.headers, trusted)),
        ))
    }
}

/// Parses one `TRUSTED_PROXIES` entry: an address or a CIDR block.
pub fn parse_proxy(raw: &str) -> Result<IpNet, String> {
    let raw = raw.trim();
    raw.parse::<IpNet>()
        .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{raw:?} is not an IP address or CIDR block"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let trusted = vec![
            parse_proxy("10.0.0.0/8").unwrap(),
            parse_proxy("::1").unwrap(),
        ];
        let h = xff(&["203.0.113.7"]);
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("::1"), &h, &trusted), ip("203.0.113.7"));
        assert_eq!(
            client_ip(ip("10.1.2.3"), &xff(&[]), &trusted),
            ip("10.1.2.3")
        );
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &[]), ip("10.1.2.3"));
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted = vec![parse_proxy("10.0.0.0/8").unwrap()];
        let peer = ip("10.0.0.1");
        // The client wrote 1.1.1.1 itself; the proxies appended the rest.
        let h = xff(&["1.1.1.1, 203.0.113.7, 10.0.0.5"]);
        assert_eq!(client_ip(peer, &h, &trusted), ip("203.0.113.7"));
        // Several headers are one list, in order.
        let h = xff(&["1.1.1.1", "203.0.113.7,10.0.0.5"]);
        assert_eq!(client_ip(peer, &h, &trusted), ip("203.0.113.7"));
        // All trusted: the left-most; garbage stops the walk.
        assert_eq!(
            client_ip(peer, &xff(&["10.9.9.9, 10.0.0.5"]), &trusted),
            ip("10.9.9.9")
        );
        assert_eq!(
            client_ip(peer, &xff(&["junk, 10.0.0.5"]), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(client_ip(peer, &xff(&["10.0.0.5, junk"]), &trusted), peer);
        // A v4-mapped peer is its IPv4 address.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &xff(&["203.0.113.7"]), &trusted),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn trusted_proxies_are_addresses_or_cidr_blocks() {
        assert_eq!(
            parse_proxy(" 10.0.0.1 ").unwrap(),
            parse_proxy("10.0.0.1/32").unwrap()
        );
        assert!(parse_proxy("fd00::/8").is_ok());
        for bad in ["", "10.0.0.300", "10.0.0.0/33", "proxy.local"] {
            assert!(parse_proxy(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_limit_lets_its_burst_through_then_refuses_with_a_wait() {
        let limits = Limits::new(&LimitSettings {
            per_user: 2,
            per_ip: 3,
            trusted_proxies: vec![],
        });
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let user = |n: i64| UserId::try_from(n).unwrap();
        assert!(limits.admit(Some(a), user(1)).is_ok());
        assert!(limits.admit(Some(a), user(1)).is_ok());
        let refused = limits.admit(Some(a), user(1)).unwrap_err();
        assert_eq!(refused.code, "RATE_LIMITED");
        assert!(refused.message.contains("user"), "{}", refused.message);
        // The IP's 3 are used up (the third counted though its user was refused).
        let refused = limits.admit(Some(a), user(2)).unwrap_err();
        assert!(refused.message.contains("IP"), "{}", refused.message);
        assert!(limits.admit(Some(b), user(2)).is_ok());
        assert!(limits.admit(None, user(3)).is_ok());
        assert!(Limits::default().admit(Some(a), user(1)).is_ok());
    }
}
