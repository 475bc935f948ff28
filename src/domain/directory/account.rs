//! Changes to existing clients and users (secret rotation, disable/enable, passwords, locks,
//! profile updates): each is validated against the committed state and recorded as one event.
//! Creation and import live in `directory`.

use std::collections::HashSet;

use super::{DirectoryError, validate_user};
use crate::domain::shared::conflict::{ConflictKeys, Entity};
use crate::domain::shared::decision::{Context, Decision, wrap};
use crate::domain::state::{State, User};
use crate::proto::ledger::{
    ClientAuthorizePartnersSet, ClientDisabled, ClientEnabled, ClientSecretRotated, CredentialDigest, UserCreated,
    UserDisabled, UserEnabled, UserLocked, UserPasswordSet, UserUnlocked, UserUpdated, event,
};

/// Longest overlap during which a rotated-out client secret still works: 30 days.
pub const SECRET_OVERLAP_SECS_MAX: u64 = 30 * 24 * 3600;

/// A user named by institution and login id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRef {
    pub institution_id: String,
    pub login_id: String,
}

#[derive(Clone, Debug)]
pub enum AccountCommand {
    /// Replace a client's secret; the old one keeps working for `overlap_secs`.
    RotateClientSecret {
        client_id: String,
        secret: CredentialDigest,
        overlap_secs: u64,
    },
    DisableClient {
        client_id: String,
    },
    EnableClient {
        client_id: String,
    },
    /// Mark a client as a first-party app that may authorize partners, or take that away.
    SetAuthorizePartners {
        client_id: String,
        authorize_partners: bool,
    },
    SetPassword {
        user: UserRef,
        password: CredentialDigest,
    },
    LockUser(UserRef),
    UnlockUser(UserRef),
    DisableUser(UserRef),
    EnableUser(UserRef),
    /// The user's new profile; `institution_id` and `login_id` name the user.
    UpdateUser(UserUpdated),
}

impl AccountCommand {
    pub fn conflict_keys(&self, keys: &mut ConflictKeys) {
        match self {
            Self::RotateClientSecret { client_id, .. }
            | Self::DisableClient { client_id }
            | Self::EnableClient { client_id }
            | Self::SetAuthorizePartners { client_id, .. } => keys.write(Entity::Client(client_id)),
            Self::SetPassword { user, .. }
            | Self::LockUser(user)
            | Self::UnlockUser(user)
            | Self::DisableUser(user)
            | Self::EnableUser(user) => keys.write(Entity::User(&user.institution_id, &user.login_id)),
            Self::UpdateUser(u) => {
                keys.write(Entity::User(&u.institution_id, &u.login_id));
                if !u.host_user_id.is_empty() {
                    keys.write(Entity::HostUserId(&u.institution_id, &u.host_user_id));
                }
            }
        }
    }
}

pub fn decide_account(state: &State, command: &AccountCommand, ctx: Context<'_>) -> Decision<(), DirectoryError> {
    match account_event(state, command, ctx) {
        Ok(kind) => Decision::ok(vec![wrap(kind)], ()),
        Err(error) => Decision::refuse(error),
    }
}

fn account_event(state: &State, command: &AccountCommand, ctx: Context<'_>) -> Result<event::Kind, DirectoryError> {
    let client = |client_id: &str| {
        state
            .client(client_id)
            .map(|_| client_id.to_owned())
            .ok_or_else(|| DirectoryError::NotFound(format!("client {client_id:?} does not exist")))
    };
    let user = |user: &UserRef| find_user(state, user).map(|_| (user.institution_id.clone(), user.login_id.clone()));
    Ok(match command {
        AccountCommand::RotateClientSecret { client_id, secret, overlap_secs } => {
            if *overlap_secs > SECRET_OVERLAP_SECS_MAX {
                return Err(DirectoryError::Invalid(format!(
                    "overlap_secs must be at most {SECRET_OVERLAP_SECS_MAX} (30 days)"
                )));
            }
            let overlap_ms = i64::try_from(overlap_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            event::Kind::ClientSecretRotated(ClientSecretRotated {
                client_id: client(client_id)?,
                secret: Some(secret.clone()),
                previous_secret_valid_until_ms: if *overlap_secs == 0 {
                    0
                } else {
                    ctx.now_ms.saturating_add(overlap_ms)
                },
            })
        }
        AccountCommand::DisableClient { client_id } => {
            event::Kind::ClientDisabled(ClientDisabled { client_id: client(client_id)? })
        }
        AccountCommand::EnableClient { client_id } => {
            event::Kind::ClientEnabled(ClientEnabled { client_id: client(client_id)? })
        }
        AccountCommand::SetAuthorizePartners { client_id, authorize_partners } => {
            event::Kind::ClientAuthorizePartnersSet(ClientAuthorizePartnersSet {
                client_id: client(client_id)?,
                authorize_partners: *authorize_partners,
            })
        }
        AccountCommand::SetPassword { user: u, password } => {
            let (institution_id, login_id) = user(u)?;
            event::Kind::UserPasswordSet(UserPasswordSet { institution_id, login_id, password: Some(password.clone()) })
        }
        AccountCommand::LockUser(u) => {
            let (institution_id, login_id) = user(u)?;
            event::Kind::UserLocked(UserLocked { institution_id, login_id })
        }
        AccountCommand::UnlockUser(u) => {
            let (institution_id, login_id) = user(u)?;
            event::Kind::UserUnlocked(UserUnlocked { institution_id, login_id })
        }
        AccountCommand::DisableUser(u) => {
            let (institution_id, login_id) = user(u)?;
            event::Kind::UserDisabled(UserDisabled { institution_id, login_id })
        }
        AccountCommand::EnableUser(u) => {
            let (institution_id, login_id) = user(u)?;
            event::Kind::UserEnabled(UserEnabled { institution_id, login_id })
        }
        AccountCommand::UpdateUser(update) => update_user(state, update)?,
    })
}

fn find_user<'s>(state: &'s State, user: &UserRef) -> Result<&'s User, DirectoryError> {
    state.user(&user.institution_id, &user.login_id).map(|u| &**u).ok_or_else(|| {
        DirectoryError::NotFound(format!(
            "user {} does not exist in institution {}",
            user.login_id, user.institution_id
        ))
    })
}

fn update_user(state: &State, update: &UserUpdated) -> Result<event::Kind, DirectoryError> {
    let existing = find_user(
        state,
        &UserRef { institution_id: update.institution_id.clone(), login_id: update.login_id.clone() },
    )?;
    // Validate the profile as it will be, with the same rules as a new user.
    let after = UserCreated {
        institution_id: update.institution_id.clone(),
        login_id: update.login_id.clone(),
        institution_user_id: existing.identity.institution_user_id.to_string(),
        host_user_id: update.host_user_id.clone(),
        user_type: update.user_type,
        first_name: update.first_name.clone(),
        last_name: update.last_name.clone(),
        email: update.email.clone(),
        institution_customers: update.institution_customers.clone(),
        password: None,
    };
    validate_user(&state.institutions, &after)?;
    check_host_user_id_free(state, &update.institution_id, &update.host_user_id, Some(&update.login_id))?;
    Ok(event::Kind::UserUpdated(update.clone()))
}

/// A host user id names one user per institution; `owner` may keep its own.
pub fn check_host_user_id_free(
    state: &State,
    institution_id: &str,
    host_user_id: &str,
    owner: Option<&str>,
) -> Result<(), DirectoryError> {
    if host_user_id.is_empty() {
        return Ok(());
    }
    match state.user_by_host_user_id(institution_id, host_user_id) {
        Some(user) if Some(&*user.identity.login_id) != owner => Err(DirectoryError::AlreadyExists(format!(
            "host_user_id {host_user_id} is already used in institution {institution_id}"
        ))),
        _ => Ok(()),
    }
}

/// As [`check_host_user_id_free`], also against host user ids taken earlier in one import.
pub fn check_host_user_id_in_batch(
    state: &State,
    user: &UserCreated,
    taken_in_batch: &HashSet<(String, String)>,
) -> Result<(), DirectoryError> {
    check_host_user_id_free(state, &user.institution_id, &user.host_user_id, None)?;
    if !user.host_user_id.is_empty()
        && taken_in_batch.contains(&(user.institution_id.clone(), user.host_user_id.clone()))
    {
        return Err(DirectoryError::AlreadyExists(format!(
            "host_user_id {} is listed twice for institution {}",
            user.host_user_id, user.institution_id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Command, Outcome, Recorded, Rejection, apply, decide};
    use crate::proto::ledger::{ClientCreated, CredentialDigest, InstitutionCreated, KeyedDigest, credential_digest};

    fn digest(byte: u8) -> CredentialDigest {
        CredentialDigest {
            kind: Some(credential_digest::Kind::Keyed(KeyedDigest { key_id: 1, digest: vec![byte; 32] })),
        }
    }

    fn given(events: Vec<event::Kind>) -> State {
        let mut state = State::default();
        for (i, kind) in events.into_iter().enumerate() {
            let at = Recorded { seq: i as u64 + 1, recorded_at_ms: 1_000, transaction_id: "", hash: [0; 32] };
            apply(&mut state, at, &wrap(kind));
        }
        state
    }

    fn when(state: &mut State, command: AccountCommand, now_ms: i64) -> Decision<Outcome, Rejection> {
        let decision = decide(state, &Command::Account(command), Context { now_ms, transaction_id: "" });
        for event in &decision.events {
            let at = Recorded { seq: state.head.seq + 1, recorded_at_ms: now_ms, transaction_id: "", hash: [0; 32] };
            apply(state, at, event);
        }
        decision
    }

    fn directory() -> State {
        given(vec![
            event::Kind::InstitutionCreated(InstitutionCreated { institution_id: "01001".into(), name: "I".into() }),
            event::Kind::ClientCreated(ClientCreated {
                client_id: "c1".into(),
                institution_ids: vec!["01001".into()],
                grant_types: vec!["client_credentials".into()],
                access_token_ttl_secs: 60,
                refresh_token_ttl_secs: 60,
                secret: Some(digest(1)),
                ..Default::default()
            }),
        ])
    }

    #[test]
    fn rotation_keeps_the_old_secret_until_the_overlap_ends() {
        let mut state = directory();
        let rotate = AccountCommand::RotateClientSecret { client_id: "c1".into(), secret: digest(2), overlap_secs: 10 };
        assert!(when(&mut state, rotate, 5_000).outcome.is_ok());
        let client = state.client("c1").unwrap();
        assert_eq!(client.secret, digest(2));
        assert_eq!(client.previous_secret_at(14_999), Some(&digest(1)));
        assert_eq!(client.previous_secret_at(15_000), None);
        // Without an overlap the old secret ends at once.
        let rotate = AccountCommand::RotateClientSecret { client_id: "c1".into(), secret: digest(3), overlap_secs: 0 };
        when(&mut state, rotate, 6_000);
        assert_eq!(state.client("c1").unwrap().previous_secret_at(6_000), None);
    }

    #[test]
    fn changes_to_unknown_entities_are_refused_without_events() {
        let mut state = directory();
        let decision = when(&mut state, AccountCommand::DisableClient { client_id: "nope".into() }, 1);
        assert!(decision.events.is_empty());
        assert!(matches!(decision.outcome, Err(Rejection::Directory(DirectoryError::NotFound(_)))));
        let user = UserRef { institution_id: "01001".into(), login_id: "ghost".into() };
        assert!(when(&mut state, AccountCommand::LockUser(user), 1).events.is_empty());
        let too_long = AccountCommand::RotateClientSecret {
            client_id: "c1".into(),
            secret: digest(2),
            overlap_secs: SECRET_OVERLAP_SECS_MAX + 1,
        };
        assert!(when(&mut state, too_long, 1).events.is_empty());
    }

    #[test]
    fn disabling_a_client_is_recorded_and_enabling_reverses_it() {
        let mut state = directory();
        when(&mut state, AccountCommand::DisableClient { client_id: "c1".into() }, 1);
        assert!(state.client("c1").unwrap().disabled);
        let cutoff = state.cutoffs.by_client["c1"];
        when(&mut state, AccountCommand::EnableClient { client_id: "c1".into() }, 2);
        assert!(!state.client("c1").unwrap().disabled);
        assert_eq!(state.cutoffs.by_client["c1"], cutoff, "tokens from before the disable stay ended");
    }
}
