//! Wire plumbing every transport shares: the validators of the `transactionId`,
//! `institutionId` and `Authorization` values (HTTP headers or gRPC metadata alike, `headers`),
//! the strict form parser (`form`) and the [`Call`] the token and authorization-code flows
//! receive (`call`).

mod call;
pub mod form;
mod headers;

pub(crate) use call::Call;
pub use form::{Params, percent_decode, percent_encode};
pub use headers::{
    BasicCredentials, HeaderValues, Institution, basic_credentials, bearer_token, encode_basic, transaction_id,
};

/// Longest `nonce` an authorization request may carry (recorded with the code; the OpenAPI
/// document states it too).
pub const NONCE_LEN_MAX: usize = 512;
/// Longest `aud` an authorization request may carry.
pub const AUDIENCE_LEN_MAX: usize = 256;
