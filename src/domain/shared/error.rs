//! Why the domain refuses a command, in its own words: named after RFC 6749/6750/7009 where one
//! fits, after the Candescent contract where it does not. The domain knows nothing of CMN codes,
//! HTTP statuses or gRPC codes; `api::error` maps every refusal to them in one exhaustive table.

/// A refusal of a token, revocation, sign-in or authorization-code command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The client is unknown or disabled (RFC 6749 5.2 `invalid_client`).
    InvalidClient,
    /// The client may not use this grant, institution, user or partner (RFC 6749 5.2
    /// `unauthorized_client`).
    UnauthorizedClient,
    /// The client's own registration makes the request impossible (no scopes, no redirect
    /// URI, a partner that does not exist).
    InvalidClientConfiguration,
    /// The refresh token, code or bearer is not (or no longer) valid (RFC 6749 5.2
    /// `invalid_grant`).
    InvalidGrant,
    /// A requested scope is unknown or not allowed (RFC 6749 5.2 `invalid_scope`).
    InvalidScope,
    /// The request is malformed in a way only the state shows (RFC 6749 5.2 `invalid_request`).
    InvalidRequest,
    /// The institution is unknown, disabled, or not the one the token or user belongs to.
    InvalidInstitution,
    /// The user is locked or disabled.
    AccessBlocked,
    /// The username does not name an enabled user of the institution.
    InvalidUsername,
    /// The user of a sign-in does not exist or cannot sign in.
    InvalidUser,
    /// The password did not match (recorded as a failed sign-in).
    InvalidUserCredentials,
    /// A client asked for a code on its own behalf.
    SelfAuthorization,
    /// The state is not as start-up leaves it (e.g. no active signing key): a programming
    /// error, never the caller's fault.
    Inconsistent,
}

#[derive(Clone, Debug, PartialEq, Eq)]
/// A refusal of a directory, account or bulk-revocation command (AdminService).
pub enum DirectoryError {
    /// The request is malformed; the text says which field and why.
    Invalid(String),
    AlreadyExists(String),
    NotFound(String),
    /// An import conflicts with what exists; one line per conflicting entry.
    Conflicts(Vec<String>),
}
