//! What every gRPC service shares: metadata lookup (mirroring the REST headers), the status of
//! an `ErrorCode` (built by the table, `api::error::grpc_status`), the transactionId echo, and
//! the admin credential check of the admin services.

use http::{HeaderName, HeaderValue, header};
use tonic::metadata::MetadataMap;
use tonic::{Response, Status};

use super::rest::header_values;
use super::wire::{self, Call, HeaderValues, Institution, Params};
use crate::api::app::App;
use crate::api::error::{ErrorCode, FrontRefusal, grpc_status};

// The metadata every TokenService call reads and answers with, as `HeaderName`s: a `&str` key
// is parsed into one (validated, lower-cased, copied) at every lookup.
const TRANSACTION_ID: HeaderName = HeaderName::from_static("transactionid");
const INSTITUTION_ID: HeaderName = HeaderName::from_static("institutionid");

/// All values of one metadata key, as the validators want them.
pub(super) fn metadata_values<'a>(metadata: &'a MetadataMap, key: &str) -> HeaderValues<'a> {
    let mut values = metadata.get_all(key).iter();
    match (values.next(), values.next()) {
        (None, _) => HeaderValues::Absent,
        (Some(one), None) => HeaderValues::One(one.as_bytes()),
        (Some(_), Some(_)) => HeaderValues::Repeated,
    }
}

/// The status for a CMN error: code per SPEC section 4, message "CMN_9xxxx: <message>",
/// ErrorInfo { reason: CMN code, domain: "tokenledger" }, and the echoed transaction id.
pub fn status(code: ErrorCode, transaction_id: Option<&str>) -> Status {
    grpc_status(code.info(), transaction_id)
}

fn echo(metadata: &mut MetadataMap, transaction_id: Option<&str>) {
    if let Some(value) = transaction_id.and_then(|t| HeaderValue::from_str(t).ok()) {
        metadata.as_mut().insert(TRANSACTION_ID, value);
    }
}

pub(super) fn reply<T>(message: T, transaction_id: &str) -> Response<T> {
    let mut response = Response::new(message);
    echo(response.metadata_mut(), Some(transaction_id));
    response
}

/// Builds the shared [`Call`] from metadata and message fields.
pub(super) fn call(metadata: &MetadataMap, fields: &[(&str, &str)]) -> Result<Call, Status> {
    let headers = metadata.as_ref();
    let transaction_id =
        wire::transaction_id(header_values(headers, &TRANSACTION_ID)).map_err(|code| status(code, None))?;
    let params = Params::from_pairs(fields.iter().copied()).map_err(|code| status(code, Some(&transaction_id)))?;
    Ok(Call {
        institution: Institution::parse(header_values(headers, &INSTITUTION_ID)),
        credentials: wire::basic_credentials(header_values(headers, &header::AUTHORIZATION)),
        params,
        transaction_id,
    })
}

/// Checks the admin credential and returns the transaction id to record (the caller's, or a
/// fresh one when it sent none).
pub fn admin_call(app: &App, metadata: &MetadataMap) -> Result<String, Status> {
    if !app.is_admin(wire::bearer_token(metadata_values(metadata, "authorization"))) {
        return Err(FrontRefusal::AdminCredentialRequired.grpc_status());
    }
    match metadata_values(metadata, "transactionid") {
        HeaderValues::Absent => Ok(uuid::Uuid::new_v4().to_string()),
        value => wire::transaction_id(value).map_err(|code| status(code, None)),
    }
}
