//! The authorization-code flow of TokenService (token.proto: AuthorizeClient, CreateAuthorizationCode, the authorization_code grant) and ID tokens: the flow and its REST and gRPC transports.

pub(crate) mod flow;
pub(crate) mod grpc;
pub(crate) mod rest;
