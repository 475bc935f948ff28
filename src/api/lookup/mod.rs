//! InstitutionUserService (users.proto): the business-user lookup flow and its REST and gRPC transports.

pub(crate) mod flow;
pub(crate) mod grpc;
pub(crate) mod rest;
