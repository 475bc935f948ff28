//! KeyService (keys.proto) over gRPC; the admin credential is checked by `admin_call`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::flow as signing;
use crate::api::app::App;
use crate::api::error::key_status;
use crate::api::grpc_util::{admin_call, reply};
use crate::proto::key_service_server::KeyService;
use crate::proto::{
    ListSigningKeysRequest, ListSigningKeysResponse, RotateSigningKeyRequest, RotateSigningKeyResponse,
};

pub struct KeyGrpc {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl KeyService for KeyGrpc {
    async fn rotate_signing_key(
        &self,
        request: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<RotateSigningKeyResponse>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let rotated = signing::rotate(&self.app, transaction_id.clone()).await.map_err(key_status)?;
        Ok(reply(rotated, &transaction_id))
    }

    async fn list_signing_keys(
        &self,
        request: Request<ListSigningKeysRequest>,
    ) -> Result<Response<ListSigningKeysResponse>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        Ok(reply(signing::list(&self.app), &transaction_id))
    }
}
