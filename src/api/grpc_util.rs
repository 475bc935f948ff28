//! What every gRPC service shares: metadata lookup (mirroring the REST headers), the status of
//! an `ErrorCode` (the CMN code in the message and a google.rpc.ErrorInfo), the transactionId
//! echo, and the admin credential check of the admin services.

use std::collections::HashMap;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::token::flow::Call;
use super::wire::{self, HeaderValues, Institution, Params};
use crate::api::error::ErrorCode;
use crate::app::App;

/// The `domain` of every ErrorInfo we send.
pub const ERROR_DOMAIN: &str = "tokenledger";

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
    let info = code.info();
    let details = ErrorDetails::with_error_info(
        info.code,
        ERROR_DOMAIN,
        HashMap::from([("message".to_owned(), info.message.to_owned())]),
    );
    let mut status = Status::with_error_details(info.grpc_code, format!("{}: {}", info.code, info.message), details);
    echo(status.metadata_mut(), transaction_id);
    status
}

fn echo(metadata: &mut MetadataMap, transaction_id: Option<&str>) {
    if let Some(value) = transaction_id.and_then(|t| MetadataValue::try_from(t).ok()) {
        metadata.insert("transactionid", value);
    }
}

pub(super) fn reply<T>(message: T, transaction_id: &str) -> Response<T> {
    let mut response = Response::new(message);
    echo(response.metadata_mut(), Some(transaction_id));
    response
}

/// Builds the shared [`Call`] from metadata and message fields.
pub(super) fn call(metadata: &MetadataMap, fields: &[(&str, &str)]) -> Result<Call, Status> {
    let transaction_id =
        wire::transaction_id(metadata_values(metadata, "transactionid")).map_err(|code| status(code, None))?;
    let params = Params::from_pairs(fields.iter().copied()).map_err(|code| status(code, Some(&transaction_id)))?;
    Ok(Call {
        institution: Institution::parse(metadata_values(metadata, "institutionid")),
        credentials: wire::basic_credentials(metadata_values(metadata, "authorization")),
        params,
        transaction_id,
    })
}

/// Checks the admin credential and returns the transaction id to record (the caller's, or a
/// fresh one when it sent none).
pub fn admin_call(app: &App, metadata: &MetadataMap) -> Result<String, Status> {
    if !app.is_admin(wire::bearer_token(metadata_values(metadata, "authorization"))) {
        return Err(Status::unauthenticated("the admin credential (Bearer <admin.token>) is required"));
    }
    match metadata_values(metadata, "transactionid") {
        HeaderValues::Absent => Ok(uuid::Uuid::new_v4().to_string()),
        value => wire::transaction_id(value).map_err(|code| status(code, None)),
    }
}
