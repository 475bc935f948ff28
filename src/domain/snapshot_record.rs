//! The node's record of a projection snapshot it wrote (`ProjectionSnapshotWritten`, see
//! `ledger::snapshot::record`): decided like any command, so that it takes its seq, time and
//! link in the chain from the writer like every other event. It reads and writes no entity (it
//! never conflicts with another command), and `apply` changes nothing but the head for it.

use super::command::{Answered, Outcome, Rejection};
use super::error::Refusal;
use super::shared::decision::{Decision, wrap};
use super::state::State;
use crate::proto::ledger::{ProjectionSnapshotWritten, event};

/// Record the snapshot file described by the event.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordSnapshot(pub ProjectionSnapshotWritten);

/// A snapshot covers committed events only: a record of a seq beyond the head is refused.
pub fn decide(state: &State, command: &RecordSnapshot) -> Decision<(), Refusal> {
    if command.0.covered_seq > state.head.seq {
        return Decision::refuse(Refusal::Inconsistent);
    }
    Decision::ok(vec![wrap(event::Kind::ProjectionSnapshotWritten(command.0.clone()))], ())
}

impl Answered for RecordSnapshot {
    type Answer = ();
    type Refusal = Refusal;
    fn into_command(self) -> super::Command {
        super::Command::RecordSnapshot(self)
    }
    fn answer(outcome: Result<Outcome, Rejection>) -> Result<(), Refusal> {
        match outcome {
            Ok(Outcome::Recorded) => Ok(()),
            Ok(_) | Err(Rejection::Directory(_)) => Err(Refusal::Inconsistent),
            Err(Rejection::Refused(refusal)) => Err(refusal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::shared::decision::Recorded;
    use crate::domain::{Command, Context, apply, decide};

    #[test]
    fn a_record_is_one_event_that_moves_only_the_head() {
        let mut state = State::default();
        let ctx = Context { now_ms: 1_000, transaction_id: "" };
        let record = ProjectionSnapshotWritten { covered_seq: 1, ..Default::default() };
        let command = Command::RecordSnapshot(RecordSnapshot(record.clone()));
        let early = decide(&state, &command, ctx);
        assert!(early.events.is_empty() && early.outcome == Err(Rejection::Refused(Refusal::Inconsistent)));
        state.head.seq = 1;
        let keys = command.conflict_keys(&state, "", Default::default());
        assert!(keys.reads.is_empty() && keys.writes.is_empty() && !keys.exclusive);
        let decision = decide(&state, &command, ctx);
        assert_eq!(decision.outcome, Ok(Outcome::Recorded));
        assert_eq!(decision.events.len(), 1);
        let before = state.clone();
        apply(
            &mut state,
            Recorded { seq: 2, recorded_at_ms: 1_000, transaction_id: "", hash: [3; 32] },
            &decision.events[0],
        );
        assert_eq!((state.head.seq, state.head.hash), (2, [3; 32]));
        state.head = before.head.clone();
        assert!(state == before, "nothing but the head changed");
    }
}
