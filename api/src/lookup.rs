//! Lookups that wait for the result: `?waitMs=N` holds the call until the
//! result is written or `N` ms pass; `Accept: text/event-stream` streams
//! where the request stands and then its result. Both wait on the
//! registry of held ids ([`crate::held`]), so a waiting caller costs no
//! MySQL query of its own.
//!
//! A wait that runs out answers `PENDING` with `ahead`/`etaMs` (read in
//! memory, see [`crate::waiting`]), MySQL down or not: a held call never
//! answers `503`. When the api starts shutting down, every wait ends at
//! once with that answer, so the drain does not wait for them.

use std::convert::Infallible;
use std::str::FromStr;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use common::domain::{IssueResult, IssueStatus};
use futures::Stream;
use serde::Deserialize;
use tokio::time::{Instant, Interval};
use uuid::Uuid;

use crate::answers::PendingResult;
use crate::error::ApiError;
use crate::held::{Hold, LOOKUP_EVERY};
use crate::state::AppState;
use crate::waiting::Standing;

/// Longest `waitMs`.
pub const MAX_WAIT: Duration = Duration::from_millis(30_000);
// The lookup's OpenAPI document says `maximum = 30000`.
const _: () = assert!(MAX_WAIT.as_millis() == 30_000);
/// How often an event stream re-reads `ahead` and `etaMs` (in memory),
/// sending them when they changed.
pub const STANDING_EVERY: Duration = Duration::from_secs(1);
/// Longest life of one event stream: then it sends the last `pending`
/// event and ends; a client still waiting opens a new one.
pub const STREAM_FOR: Duration = Duration::from_secs(5 * 60);
// The lookup's OpenAPI document says 5 minutes.
const _: () = assert!(STREAM_FOR.as_secs() == 5 * 60);
/// A comment line this often keeps idle proxies from closing the stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Longest wait for the first look-up round before a stream's first event
/// (it is late only while MySQL is slow or down).
const FIRST_CHECK_WITHIN: Duration = Duration::from_millis(4 * LOOKUP_EVERY.as_millis() as u64);

/// How long a lookup may wait for the result: `waitMs`, 0 to 30000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitMs(Duration);

impl FromStr for WaitMs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ms: u64 = s
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
            .ok_or_else(|| format!("waitMs must be a whole number of milliseconds, not {s:?}"))?;
        let wait = Duration::from_millis(ms);
        if wait > MAX_WAIT {
            return Err(format!(
                "waitMs must be at most {}, not {ms}",
                MAX_WAIT.as_millis()
            ));
        }
        Ok(Self(wait))
    }
}

/// The query of a result lookup.
#[derive(Debug, Deserialize)]
pub struct LookupParams {
    #[serde(rename = "waitMs")]
    wait_ms: Option<String>,
}

impl LookupParams {
    /// The wait asked for: `None` when `waitMs` is absent or 0 (answer at
    /// once); `400 INVALID_WAIT_MS` when it is not a number from 0 to 30000.
    pub fn wait(&self) -> Result<Option<Duration>, ApiError> {
        let Some(raw) = self.wait_ms.as_deref() else {
            return Ok(None);
        };
        let WaitMs(wait) = raw
            .parse()
            .map_err(|e: String| ApiError::bad_request("INVALID_WAIT_MS", e))?;
        Ok((!wait.is_zero()).then_some(wait))
    }
}

/// Whether the caller asked for an event stream.
pub fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The result of `id` once it is written, or `None` when it is not within
/// `wait` (or the api starts shutting down first).
pub async fn result_within(state: &AppState, id: Uuid, wait: Duration) -> Option<IssueResult> {
    let mut hold = state.held.hold(id);
    tokio::select! {
        found = hold.result() => Some(IssueResult::clone(&found)),
        _ = tokio::time::sleep(wait) => None,
        _ = state.held.closing() => None,
    }
}

/// The `PENDING` answer for `id`: where it stands, if this api knows.
pub async fn pending(state: &AppState, id: Uuid) -> PendingResult {
    pending_of(id, state.waiting.lookup(id).await)
}

fn pending_of(request_id: Uuid, standing: Option<Standing>) -> PendingResult {
    PendingResult {
        request_id,
        status: IssueStatus::Pending,
        ahead: standing.map(|s| s.ahead),
        eta_ms: standing.and_then(|s| s.eta_ms),
    }
}

/// The event stream of `id`: a `pending` event (`ahead`, `etaMs`) at once
/// and whenever they change, then a `result` event (the `200` body of the
/// lookup) and the end. A result already written is the first and only
/// event. After [`STREAM_FOR`] (or when the api shuts down) the stream sends
/// its last `pending` event and ends.
pub fn events(state: &AppState, id: Uuid) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let now = Instant::now();
    let feed = Feed {
        hold: state.held.hold(id),
        state: state.clone(),
        id,
        sent: None,
        ends: now + STREAM_FOR,
        tick: tokio::time::interval_at(now + STANDING_EVERY, STANDING_EVERY),
    };
    let stream = futures::stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        let (event, more) = feed.next().await;
        Some((Ok(event), more.then_some(feed)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// What an event stream needs between two events; dropping it (the client
/// went away) drops the hold.
struct Feed {
    hold: Hold,
    state: AppState,
    id: Uuid,
    /// The standing last sent; `None` before the first event.
    sent: Option<Option<Standing>>,
    ends: Instant,
    tick: Interval,
}

impl Feed {
    /// The next event, and whether more follow it.
    async fn next(&mut self) -> (Event, bool) {
        if self.sent.is_none() {
            let first = tokio::time::timeout(FIRST_CHECK_WITHIN, self.hold.checked()).await;
            if let Ok(Some(found)) = first {
                return (result_event(&found), false);
            }
            return (self.pending_event().await, true);
        }
        loop {
            tokio::select! {
                found = self.hold.result() => return (result_event(&found), false),
                _ = self.state.held.closing() => return (self.pending_event().await, false),
                _ = tokio::time::sleep_until(self.ends) => return (self.pending_event().await, false),
                _ = self.tick.tick() => {
                    let standing = self.state.waiting.lookup(self.id).await;
                    if self.sent != Some(standing) {
                        self.sent = Some(standing);
                        return (event("pending", &pending_of(self.id, standing)), true);
                    }
                }
            }
        }
    }

    async fn pending_event(&mut self) -> Event {
        let standing = self.state.waiting.lookup(self.id).await;
        self.sent = Some(standing);
        event("pending", &pending_of(self.id, standing))
    }
}

fn result_event(result: &IssueResult) -> Event {
    event("result", result)
}

fn event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .expect("a plain struct serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(raw: &str) -> Result<Option<Duration>, &'static str> {
        LookupParams {
            wait_ms: Some(raw.into()),
        }
        .wait()
        .map_err(|e| e.code)
    }

    #[test]
    fn wait_ms_is_a_whole_number_up_to_30000_and_0_means_no_wait() {
        assert_eq!(LookupParams { wait_ms: None }.wait().unwrap(), None);
        assert_eq!(wait("0"), Ok(None));
        assert_eq!(wait("1"), Ok(Some(Duration::from_millis(1))));
        assert_eq!(wait("30000"), Ok(Some(MAX_WAIT)));
        for bad in [
            "30001",
            "-1",
            "+5",
            "",
            " 5",
            "5s",
            "1e3",
            "1.5",
            "99999999999999999999",
        ] {
            assert_eq!(wait(bad), Err("INVALID_WAIT_MS"), "{bad:?}");
        }
    }

    #[test]
    fn an_event_stream_is_asked_for_by_its_media_type_among_others() {
        let accept = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, v.parse().unwrap());
            wants_events(&h)
        };
        assert!(accept("text/event-stream"));
        assert!(accept("application/json;q=0.5, Text/Event-Stream; q=1"));
        assert!(!accept("application/json"));
        assert!(!accept("*/*"));
        assert!(!wants_events(&HeaderMap::new()));
    }
}
