//! The repeat gate: one entry per user who holds a pending or winning
//! request for a coupon, so that a repeat click is answered with that
//! request instead of queueing another (DESIGN.md, "The door").
//!
//! The gate lives in Redis, in a hash per coupon under the coupon's hash
//! tag (`coupon-issue-events:{id}:gate`, field = user id), in both queue
//! modes: in Redis mode the enqueue script reads and writes it in the same
//! atomic step as the stream entry; in Kafka mode the api *claims* the entry
//! before producing and *places* it (lane and offset) once the broker
//! acknowledged the event. Workers *settle* entries after their results
//! commit: a winner's entry stays (a later click is answered with it), any
//! other result removes it (the user may ask again).
//!
//! An entry is one string, its fields separated by single spaces:
//! * `P <requestId> <position> <lane> <target>`: pending at a known place;
//!   `lane` is `c` (the coupon's Redis stream) or `p<N>` (Kafka partition N).
//! * `W <requestId> [<position> <lane> <target>]`: won.
//! * `C <requestId> <claimedAtMs> <eventJson>`: claimed, the broker's answer
//!   not in yet (Kafka); the event is kept so that any api can send it again
//!   under the same id if the claim goes stale.

use uuid::Uuid;

use crate::domain::{CouponId, IssueStatus, UserId};
use crate::queue::lane::{Enqueued, Lane};

/// Where a gated request stands, as its gate entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateState {
    /// Claimed before producing (Kafka); its place is not known yet.
    Claimed { claimed_at_ms: i64, event: String },
    /// Queued at a known place.
    Pending(Place),
    /// Its result is `SUCCESS`.
    Won(Option<Place>),
}

/// A queued request's place: `queue_position`, lane and target (see
/// [`Enqueued`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub position: String,
    pub lane: Lane,
    pub target: u64,
}

/// One user's entry in a coupon's gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateEntry {
    pub request_id: Uuid,
    pub state: GateState,
}

/// What a click came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// A new request, queued.
    New(Enqueued),
    /// The user already has a pending or winning request: nothing was
    /// queued. `progress` is the lane's progress read with the entry, when
    /// the backend gives it (Redis).
    Repeat {
        entry: GateEntry,
        progress: Option<u64>,
    },
}

impl Admitted {
    /// The enqueue of an event that bypasses the gate: always new.
    pub(crate) fn into_new(self) -> Enqueued {
        match self {
            Admitted::New(e) => e,
            Admitted::Repeat { .. } => unreachable!("only a gated enqueue answers a repeat"),
        }
    }
}

/// What a Kafka-mode claim of a gate entry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The entry is this request's now: produce it.
    Claimed,
    /// The user's request: a repeat.
    Repeat(GateEntry),
    /// A stale claim, now this caller's: send its event again under the
    /// same id.
    TakenOver(GateEntry),
}

/// A request whose result is committed, for the gate: its entry stays when
/// it won and goes otherwise (only if the entry still names this request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub request_id: Uuid,
    pub user_id: UserId,
    pub won: bool,
}

impl Settled {
    pub fn new(request_id: Uuid, user_id: UserId, status: IssueStatus) -> Self {
        Self {
            request_id,
            user_id,
            won: status == IssueStatus::Success,
        }
    }
}

impl GateEntry {
    /// The entry of a request just queued at `enqueued`'s place.
    pub fn pending(request_id: Uuid, enqueued: &Enqueued) -> String {
        format!(
            "P {request_id} {} {} {}",
            enqueued.position,
            lane_code(enqueued.lane),
            enqueued.target
        )
    }

    /// The entry of a claim made at `now_ms` for the request `request_id`
    /// whose event serialises to `json`.
    pub fn claim(request_id: Uuid, json: &str, now_ms: i64) -> String {
        format!("C {request_id} {now_ms} {json}")
    }

    /// Reads an entry of `coupon`'s gate; `None` if it is not one.
    pub fn parse(coupon: CouponId, raw: &str) -> Option<Self> {
        let mut fields = raw.splitn(3, ' ');
        let kind = fields.next()?;
        let request_id = Uuid::parse_str(fields.next()?).ok()?;
        let rest = fields.next();
        let place = |rest: &str| -> Option<Place> {
            let mut f = rest.split(' ');
            let position = f.next()?.to_string();
            let lane = parse_lane(coupon, f.next()?)?;
            let target = f.next()?.parse().ok()?;
            Some(Place {
                position,
                lane,
                target,
            })
        };
        let state = match kind {
            "P" => GateState::Pending(place(rest?)?),
            "W" => GateState::Won(rest.and_then(place)),
            "C" => {
                let (at, event) = rest?.split_once(' ')?;
                GateState::Claimed {
                    claimed_at_ms: at.parse().ok()?,
                    event: event.to_string(),
                }
            }
            _ => return None,
        };
        Some(Self { request_id, state })
    }

    /// `PENDING`, or `SUCCESS` once won.
    pub fn status(&self) -> IssueStatus {
        match self.state {
            GateState::Won(_) => IssueStatus::Success,
            _ => IssueStatus::Pending,
        }
    }

    /// Its place in the queue, once known.
    pub fn place(&self) -> Option<&Place> {
        match &self.state {
            GateState::Pending(p) => Some(p),
            GateState::Won(p) => p.as_ref(),
            GateState::Claimed { .. } => None,
        }
    }
}

fn lane_code(lane: Lane) -> String {
    match lane {
        Lane::Coupon(_) => "c".to_string(),
        Lane::Partition(p) => format!("p{p}"),
    }
}

fn parse_lane(coupon: CouponId, code: &str) -> Option<Lane> {
    match code {
        "c" => Some(Lane::Coupon(coupon)),
        _ => code.strip_prefix('p')?.parse().ok().map(Lane::Partition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CouponIssueEvent;

    fn coupon() -> CouponId {
        CouponId::try_from(7).unwrap()
    }

    #[test]
    fn entries_read_back_what_was_written() {
        let id = Uuid::now_v7();
        let queued = Enqueued {
            position: "3:1534".into(),
            lane: Lane::Partition(3),
            target: 1534,
            progress: None,
        };
        let entry = GateEntry::parse(coupon(), &GateEntry::pending(id, &queued)).unwrap();
        assert_eq!(entry.request_id, id);
        assert_eq!(
            entry.state,
            GateState::Pending(Place {
                position: "3:1534".into(),
                lane: Lane::Partition(3),
                target: 1534
            })
        );
        assert_eq!(entry.status(), IssueStatus::Pending);

        let event = CouponIssueEvent::new(coupon(), UserId::try_from(9).unwrap());
        let claim = GateEntry::parse(
            coupon(),
            &GateEntry::claim(event.event_id, &event.to_json(), 1_700),
        )
        .unwrap();
        assert_eq!(claim.request_id, event.event_id);
        match claim.state {
            GateState::Claimed {
                claimed_at_ms,
                event: json,
            } => {
                assert_eq!(claimed_at_ms, 1_700);
                assert_eq!(CouponIssueEvent::from_json(json.as_bytes()).unwrap(), event);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_won_entry_keeps_its_place_when_it_had_one() {
        let id = Uuid::now_v7();
        let won = GateEntry::parse(coupon(), &format!("W {id} 1700000000000-3 c 41")).unwrap();
        assert_eq!(won.status(), IssueStatus::Success);
        assert_eq!(won.place().unwrap().lane, Lane::Coupon(coupon()));
        let bare = GateEntry::parse(coupon(), &format!("W {id}")).unwrap();
        assert_eq!(bare.state, GateState::Won(None));
        assert!(GateEntry::parse(coupon(), "X whatever").is_none());
        assert!(GateEntry::parse(coupon(), &format!("P {id} 1-1 q 3")).is_none());
    }
}
