//! The grant types: the one table the directory (registration, import), the token flow's
//! dispatch, discovery, OpenAPI, AdminService and the audit view read. Adding a grant type
//! starts here; the compiler then asks for it in every exhaustive match (the token flow's
//! dispatch, `openapi::grant_schema`), and a test checks that discovery and OpenAPI list
//! exactly [`GrantKind::ALL`].

use crate::proto::ledger::GrantType;

/// A grant type the token endpoint accepts and a client may be registered for (RFC 6749 4,
/// RFC 6749 6 for refresh).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GrantKind {
    ClientCredentials,
    Password,
    RefreshToken,
    AuthorizationCode,
}

impl GrantKind {
    /// Every grant type, in the order discovery lists them.
    pub const ALL: [GrantKind; 4] =
        [GrantKind::ClientCredentials, GrantKind::Password, GrantKind::RefreshToken, GrantKind::AuthorizationCode];

    /// The `grant_type` value on the wire, in the import file and in AdminService.
    pub const fn name(self) -> &'static str {
        match self {
            GrantKind::ClientCredentials => "client_credentials",
            GrantKind::Password => "password",
            GrantKind::RefreshToken => "refresh_token",
            GrantKind::AuthorizationCode => "authorization_code",
        }
    }

    /// The grant type named `text`, if it is one.
    pub fn parse(text: &str) -> Option<GrantKind> {
        GrantKind::ALL.into_iter().find(|grant| grant.name() == text)
    }

    /// How events store it.
    pub const fn stored(self) -> GrantType {
        match self {
            GrantKind::ClientCredentials => GrantType::ClientCredentials,
            GrantKind::Password => GrantType::Password,
            GrantKind::RefreshToken => GrantType::RefreshToken,
            GrantKind::AuthorizationCode => GrantType::AuthorizationCode,
        }
    }

    /// The grant type of a stored value (`None` for an event that names none).
    pub const fn from_stored(stored: GrantType) -> Option<GrantKind> {
        match stored {
            GrantType::ClientCredentials => Some(GrantKind::ClientCredentials),
            GrantType::Password => Some(GrantKind::Password),
            GrantType::RefreshToken => Some(GrantKind::RefreshToken),
            GrantType::AuthorizationCode => Some(GrantKind::AuthorizationCode),
            GrantType::Unspecified => None,
        }
    }
}

/// The name of a stored grant type, "unspecified" for an event that names none.
pub fn stored_name(stored: GrantType) -> &'static str {
    GrantKind::from_stored(stored).map_or("unspecified", GrantKind::name)
}

/// The stored value of a grant type name, as registration and import accept them.
pub fn parse_stored(text: &str) -> Option<GrantType> {
    GrantKind::parse(text).map(GrantKind::stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_stored_values_round_trip() {
        for grant in GrantKind::ALL {
            assert_eq!(GrantKind::parse(grant.name()), Some(grant));
            assert_eq!(GrantKind::from_stored(grant.stored()), Some(grant));
            assert_eq!(stored_name(grant.stored()), grant.name());
        }
        assert_eq!(GrantKind::parse("unspecified"), None);
        assert_eq!(stored_name(GrantType::Unspecified), "unspecified");
    }
}
