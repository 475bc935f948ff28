//! The sign-in policy of the password grant: who may sign in, and lockout after repeated
//! failures. Failures are counted per (institution, login id) whether or not the login id
//! exists, so lockout reveals nothing about which login ids are real.
//!
//! Time comes in as an argument and the counts are decided here and recorded in the events;
//! `apply` only copies them, so replay rebuilds a running lockout exactly (a restart in the
//! middle of one keeps it) and a later change of the settings never rewrites history.

pub(crate) mod apply;

use std::convert::Infallible;

use crate::domain::shared::conflict::{ConflictKeys, Entity};
use crate::domain::shared::decision::{Context, Decision, wrap};
use crate::domain::shared::error::Refusal;
use crate::domain::state::{SignInKey, SignInRecord, SignInSubject, State};
use crate::proto::ledger::{SignInFailed, SignInLockedOut, event};

/// Lockout settings, passed in with every failure so the domain reads no configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures inside one window that lock the login id; 0 turns lockout off.
    pub failures_max: u32,
    /// How long an observation window lasts from its first failure.
    pub window_ms: i64,
    /// How long a lockout lasts.
    pub duration_ms: i64,
}

/// A failed password sign-in (wrong password or unknown login id), checked by the api layer.
#[derive(Clone, Debug)]
pub struct SignInFailure {
    pub key: SignInKey,
    pub policy: LockoutPolicy,
}

impl SignInFailure {
    pub fn conflict_keys(&self, keys: &mut ConflictKeys) {
        keys.write(subject_entity(&self.key));
    }
}

/// The conflict key of a sign-in subject. A known login id shares the user's key, so a failure
/// and a successful sign-in of the same user never share a batch.
pub fn subject_entity(key: &SignInKey) -> Entity<'_> {
    match &key.subject {
        SignInSubject::Login(login_id) => Entity::User(&key.institution_id, login_id),
        SignInSubject::Unknown(digest) => Entity::UnknownLogin(&key.institution_id, digest),
    }
}

/// The sign-in key of a known user.
pub fn login_key(institution_id: &str, login_id: &str) -> SignInKey {
    SignInKey { institution_id: institution_id.to_owned(), subject: SignInSubject::Login(login_id.to_owned()) }
}

/// True while (institution, login id) is locked out after repeated failures.
pub fn is_locked_out(state: &State, key: &SignInKey, now_ms: i64) -> bool {
    state.sign_ins.get(key).is_some_and(|r| r.is_locked_at(now_ms))
}

/// May the user whose password was just verified sign in at `now_ms`? A lockout or an
/// operator lock is CMN_90009; a disabled user is CMN_90016.
pub fn may_sign_in(state: &State, institution_id: &str, login_id: &str, now_ms: i64) -> Result<(), Refusal> {
    let Some(user) = state.user(institution_id, login_id) else {
        return Err(Refusal::InvalidUserCredentials);
    };
    if user.locked || is_locked_out(state, &login_key(institution_id, login_id), now_ms) {
        return Err(Refusal::AccessBlocked);
    }
    if user.disabled {
        return Err(Refusal::InvalidUser);
    }
    Ok(())
}

/// Records a failure; the failure that reaches the threshold also records the lockout. The
/// caller hears CMN_90015 once the failure is durable, or CMN_90009 when a lockout began
/// while its attempt was in flight (nothing is recorded then, as for every attempt during a
/// lockout, so a locked-out attacker cannot grow the ledger).
/// Recording a failure always refuses the sign-in, so the decision has no answer.
pub fn decide_failure(state: &State, failure: &SignInFailure, ctx: Context<'_>) -> Decision<Infallible> {
    let now_ms = ctx.now_ms;
    let record = state.sign_ins.get(&failure.key).cloned().unwrap_or_default();
    if record.is_locked_at(now_ms) {
        return Decision::refuse(Refusal::AccessBlocked);
    }
    let policy = failure.policy;
    let (window_failures, window_ends_at_ms) = if now_ms < record.window_ends_at_ms && record.window_failures > 0 {
        (record.window_failures.saturating_add(1), record.window_ends_at_ms)
    } else {
        (1, now_ms.saturating_add(policy.window_ms))
    };
    let (login_id, unknown_login_digest) = match &failure.key.subject {
        SignInSubject::Login(login_id) => (login_id.clone(), Vec::new()),
        SignInSubject::Unknown(digest) => (String::new(), digest.to_vec()),
    };
    let failed = SignInFailed {
        institution_id: failure.key.institution_id.clone(),
        login_id: login_id.clone(),
        unknown_login_digest: unknown_login_digest.clone(),
        window_failures,
        window_ends_at_ms,
        failed_login_count: record.failed_login_count.saturating_add(1),
    };
    let mut events = vec![wrap(event::Kind::SignInFailed(failed))];
    if policy.failures_max > 0 && window_failures >= policy.failures_max {
        events.push(wrap(event::Kind::SignInLockedOut(SignInLockedOut {
            institution_id: failure.key.institution_id.clone(),
            login_id,
            unknown_login_digest,
            locked_until_ms: now_ms.saturating_add(policy.duration_ms),
        })));
    }
    Decision { events, outcome: Err(Refusal::InvalidUserCredentials) }
}

/// The record of a user for the lookup's `failedLoginCount` and `userStatus.locked`.
pub fn user_record<'s>(state: &'s State, institution_id: &str, login_id: &str) -> Option<&'s SignInRecord> {
    if state.sign_ins.is_empty() {
        return None;
    }
    state.sign_ins.get(&login_key(institution_id, login_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Command, Recorded, Rejection, apply, decide};
    use crate::proto::ledger::Event;

    const POLICY: LockoutPolicy = LockoutPolicy { failures_max: 3, window_ms: 60_000, duration_ms: 30_000 };

    fn key(subject: SignInSubject) -> SignInKey {
        SignInKey { institution_id: "01001".into(), subject }
    }

    /// Given the state, when a failure happens at `now_ms`, then these events; applies them.
    fn fail(state: &mut State, subject: SignInSubject, now_ms: i64) -> (Vec<Event>, Result<(), Refusal>) {
        let failure = SignInFailure { key: key(subject), policy: POLICY };
        let decision = decide(state, &Command::SignInFailed(failure), Context { now_ms, transaction_id: "" });
        for event in &decision.events {
            let seq = state.head.seq + 1;
            apply(state, Recorded { seq, recorded_at_ms: now_ms, transaction_id: "", hash: [0; 32] }, event);
        }
        let outcome = match decision.outcome {
            Err(Rejection::Refused(code)) => Err(code),
            _ => Ok(()),
        };
        (decision.events, outcome)
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        events
            .iter()
            .map(|e| match e.kind {
                Some(event::Kind::SignInFailed(_)) => "failed",
                Some(event::Kind::SignInLockedOut(_)) => "locked_out",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn the_threshold_failure_locks_and_the_lock_ends_after_its_duration() {
        let mut state = State::default();
        let subject = SignInSubject::Login("alice".into());
        for (i, expected) in [vec!["failed"], vec!["failed"], vec!["failed", "locked_out"]].into_iter().enumerate() {
            let (events, outcome) = fail(&mut state, subject.clone(), 1_000 + i as i64);
            assert_eq!(kinds(&events), expected);
            assert_eq!(outcome, Err(Refusal::InvalidUserCredentials));
        }
        assert!(is_locked_out(&state, &key(subject.clone()), 1_002));
        // During the lockout nothing is recorded and the answer is CMN_90009.
        let (events, outcome) = fail(&mut state, subject.clone(), 20_000);
        assert!(events.is_empty());
        assert_eq!(outcome, Err(Refusal::AccessBlocked));
        assert!(!is_locked_out(&state, &key(subject.clone()), 1_002 + 30_000));
        // Afterwards the window starts afresh; failedLoginCount keeps counting.
        let (events, _) = fail(&mut state, subject.clone(), 40_000);
        assert_eq!(kinds(&events), ["failed"]);
        let record = &state.sign_ins[&key(subject)];
        assert_eq!((record.window_failures, record.failed_login_count), (1, 4));
    }

    #[test]
    fn unknown_login_ids_lock_after_the_same_number_of_failures() {
        let mut known = State::default();
        let mut unknown = State::default();
        for i in 0..3 {
            let (a, _) = fail(&mut known, SignInSubject::Login("alice".into()), i);
            let (b, _) = fail(&mut unknown, SignInSubject::Unknown([7; 32]), i);
            assert_eq!(kinds(&a), kinds(&b));
        }
        assert!(is_locked_out(&unknown, &key(SignInSubject::Unknown([7; 32])), 3));
    }

    #[test]
    fn failures_spread_beyond_the_window_never_lock() {
        let mut state = State::default();
        let subject = SignInSubject::Login("alice".into());
        for i in 0..6 {
            let (events, _) = fail(&mut state, subject.clone(), i * 40_000);
            assert_eq!(kinds(&events).len(), 1, "failure {i} must not lock");
        }
    }

    #[test]
    fn lockout_off_when_failures_max_is_zero() {
        let mut state = State::default();
        let failure = SignInFailure {
            key: key(SignInSubject::Login("alice".into())),
            policy: LockoutPolicy { failures_max: 0, ..POLICY },
        };
        for now_ms in 0..10 {
            let decision = decide_failure(&state, &failure, Context { now_ms, transaction_id: "" });
            assert_eq!(kinds(&decision.events), ["failed"]);
            for event in &decision.events {
                let seq = state.head.seq + 1;
                apply(&mut state, Recorded { seq, recorded_at_ms: now_ms, transaction_id: "", hash: [0; 32] }, event);
            }
        }
    }
}
