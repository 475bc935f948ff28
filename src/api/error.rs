//! The one error table: every error a caller can see, with its CMN code, message, HTTP status,
//! gRPC code and RFC 6749 `error` string. The match in [`ErrorCode::info`] is exhaustive and has
//! no catch-all arm, so a new error forces a decision for every transport; so are the maps from
//! the domain's [`Refusal`] (below), for the gRPC-only services `admin_status`, `audit_status`
//! and `key_status`, the lookup's [`LookupError`] (ISR codes) and the front door's
//! [`FrontRefusal`]; [`grpc_status`] builds the gRPC status of a CMN or ISR row.

use std::collections::HashMap;

use http::StatusCode;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::audit::ReadError;
use crate::audit::query::QueryError;
use crate::domain::error::{DirectoryError, Refusal};

// The refusals of the services that have their own (the token flows refuse with the domain's
// `Refusal`); defined here, beside the table that renders them, so the table imports no service.

/// Why an admin request failed: the domain's refusal, a ledger read a bulk revocation needed,
/// or the ledger not taking writes. Its text and gRPC status are in the one table,
/// `api/error.rs` (`admin_status`).
#[derive(Debug)]
pub enum AdminError {
    Refused(DirectoryError),
    Read(AuditError),
    Unavailable,
}

impl From<DirectoryError> for AdminError {
    fn from(error: DirectoryError) -> Self {
        Self::Refused(error)
    }
}

/// Why an audit request failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the ledger is not available")]
    Unavailable,
    /// A stored event failed its own hash check: the file was changed after start-up.
    #[error("{0}")]
    DataLoss(String),
    #[error("internal error")]
    Internal,
}

impl From<QueryError> for AuditError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::Read(ReadError::Closed) => Self::Unavailable,
            QueryError::Read(ReadError::Store(error)) => {
                tracing::error!(%error, "audit read failed");
                Self::Internal
            }
            QueryError::Chain(error) | QueryError::Read(ReadError::Damaged(error)) => {
                Self::DataLoss(format!("the ledger failed verification: {error}"))
            }
            QueryError::Missing(seq) => {
                Self::DataLoss(format!("the ledger failed verification: event {seq} is missing (dropped)"))
            }
        }
    }
}

impl From<ReadError> for AuditError {
    fn from(error: ReadError) -> Self {
        QueryError::Read(error).into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("cannot store the new signing key: {0}")]
    KeyFile(String),
    #[error("the ledger is not accepting writes")]
    Unavailable,
}

/// The CMN code of each domain refusal.
impl From<Refusal> for ErrorCode {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::InvalidClient => Self::InvalidClient,
            Refusal::UnauthorizedClient => Self::NotAuthorized,
            Refusal::InvalidClientConfiguration => Self::InvalidClientConfiguration,
            Refusal::InvalidGrant => Self::InvalidToken,
            Refusal::InvalidScope => Self::InvalidScope,
            Refusal::InvalidRequest => Self::InvalidRequest,
            Refusal::InvalidInstitution => Self::InvalidInstitution,
            Refusal::AccessBlocked => Self::AccessBlocked,
            Refusal::InvalidUsername => Self::InvalidUsername,
            Refusal::InvalidUser => Self::InvalidUser,
            Refusal::InvalidUserCredentials => Self::InvalidUserCredentials,
            Refusal::SelfAuthorization => Self::SelfAuthorization,
            Refusal::Inconsistent => Self::Internal,
        }
    }
}

/// A caller-visible error of the token, revocation, introspection and authorization-code
/// endpoints (SPEC section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Internal,
    /// SPEC 6's CMN_90001. No request can see another's answer here (each waits on its own
    /// reply channel), so nothing produces it; the code is kept so that the table stays the SPEC's.
    #[allow(dead_code)]
    CrossTalk,
    QuotaLimit,
    SpikeLimit,
    InvalidClient,
    InvalidInstitution,
    NotAuthorized,
    InvalidGrantType,
    InvalidTransactionId,
    AccessBlocked,
    InvalidHeader,
    InvalidRequest,
    InvalidScope,
    InvalidUsername,
    InvalidPassword,
    InvalidUserCredentials,
    InvalidUser,
    NonPrintable,
    InvalidToken,
    TokenNotRecorded,
    SelfAuthorization,
    InvalidClientConfiguration,
    /// SPEC 8: a cluster node that cannot confirm with the leader that its projections are
    /// current answers this instead of a possibly stale `"active": true`: CMN_90000 with 503
    /// and `Retry-After` (gRPC UNAVAILABLE). Not a row of SPEC 6's table (`ALL`), which gives
    /// CMN_90000 its 500.
    ReadUnconfirmed,
}

/// Everything a transport needs to render one [`ErrorCode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The Candescent code, e.g. `CMN_90004`.
    pub code: &'static str,
    /// The Candescent message for that code.
    pub message: &'static str,
    pub http_status: StatusCode,
    pub grpc_code: Code,
    /// The RFC 6749 section 5.2 `error` value, so standard OAuth clients understand it.
    pub oauth_error: &'static str,
}

const fn info(
    code: &'static str,
    message: &'static str,
    http_status: StatusCode,
    grpc_code: Code,
    oauth_error: &'static str,
) -> ErrorInfo {
    ErrorInfo { code, message, http_status, grpc_code, oauth_error }
}

impl ErrorCode {
    pub const fn info(self) -> ErrorInfo {
        use Code as G;
        use StatusCode as H;
        match self {
            Self::Internal => {
                info("CMN_90000", "Internal server error", H::INTERNAL_SERVER_ERROR, G::Internal, "server_error")
            }
            Self::CrossTalk => info(
                "CMN_90001",
                "Internal server error - Cross Talk",
                H::INTERNAL_SERVER_ERROR,
                G::Internal,
                "server_error",
            ),
            Self::QuotaLimit => info(
                "CMN_90002",
                "Quota limit violation",
                H::INTERNAL_SERVER_ERROR,
                G::ResourceExhausted,
                "temporarily_unavailable",
            ),
            Self::SpikeLimit => info(
                "CMN_90003",
                "Spike limit violation",
                H::INTERNAL_SERVER_ERROR,
                G::ResourceExhausted,
                "temporarily_unavailable",
            ),
            Self::InvalidClient => {
                info("CMN_90004", "Invalid client credentials", H::UNAUTHORIZED, G::Unauthenticated, "invalid_client")
            }
            Self::InvalidInstitution => info(
                "CMN_90005",
                "Header institutionId is invalid or Form param institution_user_id is invalid",
                H::BAD_REQUEST,
                G::InvalidArgument,
                "invalid_request",
            ),
            Self::NotAuthorized => info(
                "CMN_90006",
                "Not authorized to access this resource",
                H::BAD_REQUEST,
                G::InvalidArgument,
                "unauthorized_client",
            ),
            Self::InvalidGrantType => {
                info("CMN_90007", "Invalid grant type", H::BAD_REQUEST, G::InvalidArgument, "unsupported_grant_type")
            }
            Self::InvalidTransactionId => info(
                "CMN_90008",
                "Header transactionId is invalid",
                H::BAD_REQUEST,
                G::InvalidArgument,
                "invalid_request",
            ),
            Self::AccessBlocked => {
                info("CMN_90009", "Access blocked", H::BAD_REQUEST, G::InvalidArgument, "invalid_grant")
            }
            Self::InvalidHeader => {
                info("CMN_90010", "Header is invalid", H::BAD_REQUEST, G::InvalidArgument, "invalid_request")
            }
            Self::InvalidRequest => {
                info("CMN_90011", "Request is invalid", H::BAD_REQUEST, G::InvalidArgument, "invalid_request")
            }
            Self::InvalidScope => {
                info("CMN_90012", "Request is invalid - Scopes", H::BAD_REQUEST, G::InvalidArgument, "invalid_scope")
            }
            Self::InvalidUsername => {
                info("CMN_90013", "Username is invalid", H::BAD_REQUEST, G::InvalidArgument, "invalid_request")
            }
            Self::InvalidPassword => {
                info("CMN_90014", "Password is invalid", H::BAD_REQUEST, G::InvalidArgument, "invalid_request")
            }
            Self::InvalidUserCredentials => {
                info("CMN_90015", "Invalid user credentials", H::UNAUTHORIZED, G::Unauthenticated, "invalid_grant")
            }
            Self::InvalidUser => info("CMN_90016", "Invalid user", H::BAD_REQUEST, G::InvalidArgument, "invalid_grant"),
            Self::NonPrintable => info(
                "CMN_90017",
                "Request contains non printable ASCII characters",
                H::BAD_REQUEST,
                G::InvalidArgument,
                "invalid_request",
            ),
            Self::InvalidToken => {
                info("CMN_90018", "Invalid token", H::UNAUTHORIZED, G::Unauthenticated, "invalid_grant")
            }
            Self::ReadUnconfirmed => info(
                "CMN_90000",
                "Internal server error",
                H::SERVICE_UNAVAILABLE,
                G::Unavailable,
                "temporarily_unavailable",
            ),
            Self::TokenNotRecorded => info(
                "CMN_90019",
                "Error creating token",
                H::INTERNAL_SERVER_ERROR,
                G::Unavailable,
                "temporarily_unavailable",
            ),
            Self::SelfAuthorization => {
                info("CMN_90020", "App cannot authorize itself", H::BAD_REQUEST, G::InvalidArgument, "invalid_request")
            }
            Self::InvalidClientConfiguration => info(
                "CMN_90021",
                "Invalid client configuration",
                H::BAD_REQUEST,
                G::InvalidArgument,
                "unauthorized_client",
            ),
        }
    }

    /// Every code, for the tests of the table.
    #[cfg(test)]
    pub const ALL: [ErrorCode; 22] = [
        Self::Internal,
        Self::CrossTalk,
        Self::QuotaLimit,
        Self::SpikeLimit,
        Self::InvalidClient,
        Self::InvalidInstitution,
        Self::NotAuthorized,
        Self::InvalidGrantType,
        Self::InvalidTransactionId,
        Self::AccessBlocked,
        Self::InvalidHeader,
        Self::InvalidRequest,
        Self::InvalidScope,
        Self::InvalidUsername,
        Self::InvalidPassword,
        Self::InvalidUserCredentials,
        Self::InvalidUser,
        Self::NonPrintable,
        Self::InvalidToken,
        Self::TokenNotRecorded,
        Self::SelfAuthorization,
        Self::InvalidClientConfiguration,
    ];
}

// The gRPC-only services (AdminService, AuditService, KeyService) answer with a status and a
// text; these are their whole tables.

/// The gRPC status of each AdminService error (directory, account and bulk commands; the
/// service is gRPC-only, so the status and its text are the whole answer).
pub fn admin_status(error: AdminError) -> Status {
    use AdminError::{Read, Refused, Unavailable};
    let text = error.to_string();
    match error {
        Refused(DirectoryError::Invalid(_)) | Read(AuditError::Invalid(_)) => Status::invalid_argument(text),
        Refused(DirectoryError::AlreadyExists(_)) => Status::already_exists(text),
        Refused(DirectoryError::NotFound(_)) | Read(AuditError::NotFound(_)) => Status::not_found(text),
        Refused(DirectoryError::Conflicts(_)) | Read(AuditError::DataLoss(_)) => Status::failed_precondition(text),
        Unavailable | Read(AuditError::Unavailable | AuditError::Internal) => Status::unavailable(text),
    }
}

/// The text of each AdminService error.
impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use AdminError::{Read, Refused, Unavailable};
        match self {
            Refused(
                DirectoryError::Invalid(text) | DirectoryError::AlreadyExists(text) | DirectoryError::NotFound(text),
            )
            | Read(AuditError::Invalid(text) | AuditError::NotFound(text) | AuditError::DataLoss(text)) => {
                f.write_str(text)
            }
            Refused(DirectoryError::Conflicts(lines)) => {
                write!(f, "import refused, nothing was applied:\n{}", lines.join("\n"))
            }
            Unavailable | Read(AuditError::Unavailable | AuditError::Internal) => {
                f.write_str("the ledger is not accepting writes")
            }
        }
    }
}

impl std::error::Error for AdminError {}

/// The gRPC status of each AuditService error.
pub fn audit_status(error: AuditError) -> Status {
    match error {
        AuditError::Invalid(text) => Status::invalid_argument(text),
        AuditError::NotFound(text) => Status::not_found(text),
        AuditError::Unavailable => Status::unavailable("the ledger is not available"),
        AuditError::DataLoss(text) => Status::data_loss(text),
        AuditError::Internal => Status::internal("internal error"),
    }
}

/// Why a ClusterService call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("this server does not run in cluster mode (start it with --node-id, --raft-listen and --peers)")]
    NotClustered,
    #[error("{0}")]
    Invalid(String),
    /// A membership change asked of a node that does not lead.
    #[error("this node does not lead the cluster; {0}")]
    NotLeader(String),
    #[error("{0}")]
    AlreadyInitialised(String),
    #[error("{0}")]
    Failed(String),
}

/// The gRPC status of each ClusterService error.
pub fn cluster_status(error: ClusterError) -> Status {
    let text = error.to_string();
    match error {
        ClusterError::NotClustered | ClusterError::NotLeader(_) | ClusterError::AlreadyInitialised(_) => {
            Status::failed_precondition(text)
        }
        ClusterError::Invalid(_) => Status::invalid_argument(text),
        ClusterError::Failed(_) => Status::unavailable(text),
    }
}

/// The gRPC status of each KeyService error.
pub fn key_status(error: RotateError) -> Status {
    match error {
        RotateError::KeyFile(text) => Status::internal(text),
        RotateError::Unavailable => Status::unavailable(error.to_string()),
    }
}

/// The refusals of the front door (`server/front.rs`), before any service sees the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontRefusal {
    /// An AdminService or AuditService call without a verified client certificate, when the
    /// server requires one (gRPC only).
    ClientCertificateRequired,
    /// An AdminService or AuditService call without the admin credential (gRPC only).
    AdminCredentialRequired,
    /// The request took longer than `request_timeout_secs`.
    TimedOut,
}

impl FrontRefusal {
    /// The gRPC status of each front-door refusal.
    pub fn grpc_status(self) -> Status {
        match self {
            Self::ClientCertificateRequired => {
                Status::unauthenticated("a verified client certificate is required for this service")
            }
            Self::AdminCredentialRequired => {
                Status::unauthenticated("the admin credential (Bearer <admin.token>) is required")
            }
            Self::TimedOut => Status::deadline_exceeded("the request took longer than request_timeout_secs"),
        }
    }

    /// The HTTP status and the JSON body's `error` and `error_description` of each front-door
    /// refusal over REST. The admin refusals only reach gRPC calls (the admin services have no
    /// REST routes); their REST row says what they would be.
    pub const fn rest(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::ClientCertificateRequired => {
                (StatusCode::UNAUTHORIZED, "invalid_client", "a verified client certificate is required")
            }
            Self::AdminCredentialRequired => {
                (StatusCode::UNAUTHORIZED, "invalid_token", "the admin credential is required")
            }
            Self::TimedOut => (StatusCode::REQUEST_TIMEOUT, "request_timeout", "the request took too long"),
        }
    }
}

/// The gRPC status of a CMN or ISR error: the row's code, message "CODE: <message>",
/// google.rpc.ErrorInfo { reason: the code, domain: [`ERROR_DOMAIN`] }, and the echoed
/// `transactionId` (when valid).
pub fn grpc_status(info: ErrorInfo, transaction_id: Option<&str>) -> Status {
    let details = ErrorDetails::with_error_info(
        info.code,
        ERROR_DOMAIN,
        HashMap::from([("message".to_owned(), info.message.to_owned())]),
    );
    let mut status = Status::with_error_details(info.grpc_code, format!("{}: {}", info.code, info.message), details);
    if let Some(value) = transaction_id.and_then(|t| MetadataValue::try_from(t).ok()) {
        status.metadata_mut().insert("transactionid", value);
    }
    status
}

/// The `domain` of every google.rpc.ErrorInfo the server sends.
pub const ERROR_DOMAIN: &str = "tokenledger";

/// A caller-visible error of the institution-user lookup (SPEC 3.5), which answers with
/// Candescent's ISR codes instead of the CMN ones. Like [`ErrorCode::info`], the match in
/// [`LookupError::info`] is exhaustive. The `oauth_error` values are RFC 6750's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LookupError {
    /// A malformed `institutionId` header.
    BadInstitution,
    /// A `userIdType` that is empty, repeated or not one of the documented values.
    BadUserIdType,
    /// A query string that is not a well-formed form (broken escapes, control characters).
    BadQuery,
    /// A path id that no user can have: empty, too long, not printable ASCII.
    BadUserId,
    /// No bearer token, or one that is not an active access token.
    Unauthenticated,
    /// The token lacks `institution-users:read`, or is bound to another institution or user.
    Forbidden,
    NotFound,
    /// SPEC 3.5's ISR_99999. The lookup only reads the projections, so nothing fails inside it
    /// today; the code is kept so that the table stays the SPEC's.
    #[allow(dead_code)]
    Internal,
}

impl LookupError {
    pub const fn info(self) -> ErrorInfo {
        use Code as G;
        use StatusCode as H;
        match self {
            // Candescent's own ISR_10000 text, for the fault it describes.
            Self::BadInstitution => info(
                "ISR_10000",
                "InstitutionId is invalid or its incorrectly configured",
                H::BAD_REQUEST,
                G::InvalidArgument,
                "invalid_request",
            ),
            Self::BadUserIdType => info(
                "ISR_10000",
                "Query param userIdType is invalid",
                H::BAD_REQUEST,
                G::InvalidArgument,
                "invalid_request",
            ),
            Self::BadQuery => {
                info("ISR_10000", "Query is invalid", H::BAD_REQUEST, G::InvalidArgument, "invalid_request")
            }
            Self::BadUserId => info(
                "ISR_10000",
                "Path param institutionUserId is invalid",
                H::BAD_REQUEST,
                G::InvalidArgument,
                "invalid_request",
            ),
            Self::Unauthenticated => info(
                "ISR_11001",
                "Full authentication was not provided in the request",
                H::UNAUTHORIZED,
                G::Unauthenticated,
                "invalid_token",
            ),
            Self::Forbidden => info(
                "ISR_11003",
                "The authentication provided does not authorize this request",
                H::FORBIDDEN,
                G::PermissionDenied,
                "insufficient_scope",
            ),
            Self::NotFound => info("ISR_10001", "InstitutionUser not found", H::NOT_FOUND, G::NotFound, "not_found"),
            Self::Internal => {
                info("ISR_99999", "Internal server error", H::INTERNAL_SERVER_ERROR, G::Internal, "server_error")
            }
        }
    }

    #[cfg(test)]
    pub const ALL: [LookupError; 8] = [
        Self::BadInstitution,
        Self::BadUserIdType,
        Self::BadQuery,
        Self::BadUserId,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::NotFound,
        Self::Internal,
    ];
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = self.info();
        write!(f, "{}: {}", info.code, info.message)
    }
}

impl std::error::Error for LookupError {}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = self.info();
        write!(f, "{}: {}", info.code, info.message)
    }
}

impl std::error::Error for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_statuses_follow_the_spec_table() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let info = code.info();
            assert!(seen.insert(info.code), "duplicate {}", info.code);
            let expected = match info.code {
                "CMN_90000" | "CMN_90001" | "CMN_90002" | "CMN_90003" | "CMN_90019" => 500,
                "CMN_90004" | "CMN_90015" | "CMN_90018" => 401,
                _ => 400,
            };
            assert_eq!(info.http_status.as_u16(), expected, "{}", info.code);
            // SPEC section 4: gRPC codes follow the HTTP status, except rate limits and storage.
            let grpc = match (info.code, expected) {
                ("CMN_90002" | "CMN_90003", _) => Code::ResourceExhausted,
                ("CMN_90019", _) => Code::Unavailable,
                (_, 400) => Code::InvalidArgument,
                (_, 401) => Code::Unauthenticated,
                _ => Code::Internal,
            };
            assert_eq!(info.grpc_code, grpc, "{}", info.code);
        }
        assert_eq!(seen.len(), 22);
    }

    #[test]
    fn lookup_codes_follow_spec_3_5() {
        let rows: Vec<(&str, u16, Code)> = LookupError::ALL
            .iter()
            .map(|e| (e.info().code, e.info().http_status.as_u16(), e.info().grpc_code))
            .collect();
        assert_eq!(
            rows,
            [
                ("ISR_10000", 400, Code::InvalidArgument),
                ("ISR_10000", 400, Code::InvalidArgument),
                ("ISR_10000", 400, Code::InvalidArgument),
                ("ISR_10000", 400, Code::InvalidArgument),
                ("ISR_11001", 401, Code::Unauthenticated),
                ("ISR_11003", 403, Code::PermissionDenied),
                ("ISR_10001", 404, Code::NotFound),
                ("ISR_99999", 500, Code::Internal),
            ]
        );
        assert_eq!(LookupError::NotFound.info().message, "InstitutionUser not found");
        // Each ISR_10000 names its own fault.
        let messages: std::collections::HashSet<&str> =
            LookupError::ALL.iter().filter(|e| e.info().code == "ISR_10000").map(|e| e.info().message).collect();
        assert_eq!(messages.len(), 4);
    }
}
