//! KeyService (keys.proto): signing-key rotation and listing.

pub(crate) mod flow;
pub(crate) mod grpc;
