//! Wire plumbing every transport shares: the validators of the `transactionId`,
//! `institutionId` and `Authorization` values (HTTP headers or gRPC metadata alike, `headers`)
//! and the strict form parser (`form`).

pub mod form;
mod headers;

pub use form::{Params, percent_decode, percent_encode};
pub use headers::{
    BasicCredentials, HeaderValues, Institution, basic_credentials, bearer_token, encode_basic, transaction_id,
};
