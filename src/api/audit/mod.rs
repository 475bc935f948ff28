//! AuditService (audit.proto): the flow shared by its transports (`flow.rs`) and the gRPC
//! transport (`grpc.rs`). Every call needs the admin credential (checked like AdminService).

pub(crate) mod flow;
pub(crate) mod grpc;
