//! What `decide` receives besides the state ([`Context`]), what it gives back ([`Decision`]),
//! and where `apply` finds an event in the ledger ([`Recorded`]).

use super::error::Refusal;
use crate::proto::ledger::{Event, event};

/// What `decide` needs besides the state: the batch time and the request's correlation id.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The clock's reading for this batch. Lifetimes, lockout windows and retry windows are
    /// counted from it. The batch's events are recorded at `max(now_ms, head)` so that ledger
    /// time never decreases; after a clock step back that is later than `now_ms`, and must not
    /// be used for anything but ordering.
    pub now_ms: i64,
    pub transaction_id: &'a str,
}

/// Where an event sits in the ledger.
#[derive(Clone, Copy, Debug)]
pub struct Recorded<'a> {
    pub seq: u64,
    pub recorded_at_ms: i64,
    pub transaction_id: &'a str,
    pub hash: [u8; 32],
}

/// The event of one `kind`.
pub fn wrap(kind: event::Kind) -> Event {
    Event { kind: Some(kind) }
}

/// When an event was decided: its own `issued_at_ms` field, or for events from before that
/// field, the time it was recorded at.
pub fn decided_at_ms(issued_at_ms: i64, at: Recorded<'_>) -> i64 {
    if issued_at_ms > 0 { issued_at_ms } else { at.recorded_at_ms }
}

/// The result of deciding one command: events to append (possibly even when the command is
/// refused, e.g. a family revocation on refresh-token reuse) and the answer for the caller.
/// Each aggregate decides into its own answer `O` and its own refusal `R`; the dispatcher
/// (`domain::decide`) wraps them into `Outcome` and `Rejection`.
#[derive(Debug)]
pub struct Decision<O, R = Refusal> {
    pub events: Vec<Event>,
    pub outcome: Result<O, R>,
}

impl<O, R> Decision<O, R> {
    pub fn ok(events: Vec<Event>, outcome: O) -> Self {
        Self { events, outcome: Ok(outcome) }
    }

    /// Refused, with nothing recorded.
    pub fn refuse(reason: R) -> Self {
        Self { events: Vec::new(), outcome: Err(reason) }
    }

    /// The same events, with the answer and the refusal mapped (the dispatcher's wrapping).
    #[inline]
    pub fn map<P, S>(self, answer: impl FnOnce(O) -> P, refusal: impl FnOnce(R) -> S) -> Decision<P, S> {
        Decision { events: self.events, outcome: self.outcome.map(answer).map_err(refusal) }
    }
}
