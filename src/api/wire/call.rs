//! The request every flow of the token and authorization-code services receives, whichever
//! transport carried it: below both services' flows, so neither imports the other for it.

use super::{BasicCredentials, Institution, Params};
use crate::api::error::ErrorCode;

/// One request to the token, revocation, introspection or authorization-code endpoint, after
/// the transport has checked `transactionId` and parsed the body.
pub struct Call {
    pub transaction_id: String,
    pub institution: Institution,
    pub credentials: Result<BasicCredentials, ErrorCode>,
    pub params: Params,
}
