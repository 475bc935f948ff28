//! TokenService (token.proto) and the /oauth2/v1 endpoints: the token, revocation and
//! introspection flows shared by both transports (`flow.rs`), the password grant's user check
//! (`signin.rs`) and the REST and gRPC transports.

pub(crate) mod flow;
pub(crate) mod grpc;
pub(crate) mod rest;
pub(crate) mod signin;
