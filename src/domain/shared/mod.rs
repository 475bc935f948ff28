//! The vocabulary every aggregate speaks: ids and the syntax of caller values, scopes, the
//! domain's refusals, the grant-type table, what a decision is (`decision`) and the conflict
//! keys a command names (`conflict`). It imports no aggregate and no projection.

pub mod conflict;
pub mod decision;
pub mod error;
pub mod grant;
pub mod ids;
pub mod scope;
