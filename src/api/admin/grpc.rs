//! AdminService (admin.proto) over gRPC: every handler checks the admin credential
//! (`grpc_util::admin_call`), runs its flow and maps the error through `api::error::admin_status`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::admin::directory::{self, UserChange};
use crate::api::admin::{self};
use crate::api::app::App;
use crate::api::error::admin_status;
use crate::api::grpc_util::{admin_call, reply};
use crate::proto::admin_service_server::AdminService;
use crate::proto::*;

pub struct AdminGrpc {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn create_institution(
        &self,
        request: Request<CreateInstitutionRequest>,
    ) -> Result<Response<crate::proto::Institution>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let created = admin::create_institution(&self.app, transaction_id.clone(), request.into_inner())
            .await
            .map_err(admin_status)?;
        Ok(reply(created, &transaction_id))
    }

    async fn create_client(
        &self,
        request: Request<CreateClientRequest>,
    ) -> Result<Response<CreateClientResponse>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let spec = request.into_inner().spec.ok_or_else(|| Status::invalid_argument("spec is required"))?;
        let created = admin::create_client(&self.app, transaction_id.clone(), spec).await.map_err(admin_status)?;
        Ok(reply(created, &transaction_id))
    }

    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let created =
            admin::create_user(&self.app, transaction_id.clone(), request.into_inner()).await.map_err(admin_status)?;
        Ok(reply(created, &transaction_id))
    }

    async fn import(&self, request: Request<ImportRequest>) -> Result<Response<ImportResponse>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let summary =
            admin::import(&self.app, transaction_id.clone(), request.into_inner()).await.map_err(admin_status)?;
        Ok(reply(summary, &transaction_id))
    }

    async fn list_institutions(
        &self,
        request: Request<ListInstitutionsRequest>,
    ) -> Result<Response<ListInstitutionsResponse>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        Ok(reply(directory::list_institutions(&self.app), &transaction_id))
    }

    async fn get_institution(
        &self,
        request: Request<GetInstitutionRequest>,
    ) -> Result<Response<crate::proto::Institution>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let found = directory::get_institution(&self.app, request.get_ref()).map_err(admin_status)?;
        Ok(reply(found, &transaction_id))
    }

    async fn list_clients(
        &self,
        request: Request<ListClientsRequest>,
    ) -> Result<Response<ListClientsResponse>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        Ok(reply(directory::list_clients(&self.app, request.get_ref()), &transaction_id))
    }

    async fn get_client(&self, request: Request<GetClientRequest>) -> Result<Response<Client>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let found = directory::get_client(&self.app, &request.get_ref().client_id).map_err(admin_status)?;
        Ok(reply(found, &transaction_id))
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let page = directory::list_users(&self.app, request.get_ref()).map_err(admin_status)?;
        Ok(reply(page, &transaction_id))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let found = directory::get_user(&self.app, request.get_ref()).map_err(admin_status)?;
        Ok(reply(found, &transaction_id))
    }

    async fn rotate_client_secret(
        &self,
        request: Request<RotateClientSecretRequest>,
    ) -> Result<Response<RotateClientSecretResponse>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let rotated = directory::rotate_client_secret(&self.app, transaction_id.clone(), request.into_inner())
            .await
            .map_err(admin_status)?;
        Ok(reply(rotated, &transaction_id))
    }

    async fn disable_client(&self, request: Request<GetClientRequest>) -> Result<Response<Client>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let client_id = request.into_inner().client_id;
        let client = directory::set_client_disabled(&self.app, transaction_id.clone(), client_id, true)
            .await
            .map_err(admin_status)?;
        Ok(reply(client, &transaction_id))
    }

    async fn enable_client(&self, request: Request<GetClientRequest>) -> Result<Response<Client>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let client_id = request.into_inner().client_id;
        let client = directory::set_client_disabled(&self.app, transaction_id.clone(), client_id, false)
            .await
            .map_err(admin_status)?;
        Ok(reply(client, &transaction_id))
    }

    async fn set_client_authorize_partners(
        &self,
        request: Request<SetClientAuthorizePartnersRequest>,
    ) -> Result<Response<Client>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let client = directory::set_client_authorize_partners(&self.app, transaction_id.clone(), request.into_inner())
            .await
            .map_err(admin_status)?;
        Ok(reply(client, &transaction_id))
    }

    async fn set_user_password(&self, request: Request<SetUserPasswordRequest>) -> Result<Response<User>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let user = directory::set_user_password(&self.app, transaction_id.clone(), request.into_inner())
            .await
            .map_err(admin_status)?;
        Ok(reply(user, &transaction_id))
    }

    async fn lock_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        self.user_change(request, UserChange::Lock).await
    }

    async fn unlock_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        self.user_change(request, UserChange::Unlock).await
    }

    async fn disable_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        self.user_change(request, UserChange::Disable).await
    }

    async fn enable_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        self.user_change(request, UserChange::Enable).await
    }

    async fn update_user(&self, request: Request<UpdateUserRequest>) -> Result<Response<User>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let user = directory::update_user(&self.app, transaction_id.clone(), request.into_inner())
            .await
            .map_err(admin_status)?;
        Ok(reply(user, &transaction_id))
    }

    // Bulk revocation (issue 5): the flows live in `api::bulk`.
    async fn bulk_revoke(&self, request: Request<BulkRevokeRequest>) -> Result<Response<BulkRevokeResponse>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let answer = super::bulk::bulk_revoke(&self.app, transaction_id.clone(), request.into_inner())
            .await
            .map_err(admin_status)?;
        Ok(reply(answer, &transaction_id))
    }

    async fn revoke_blast_radius(
        &self,
        request: Request<RevokeBlastRadiusRequest>,
    ) -> Result<Response<RevokeBlastRadiusResponse>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let answer = super::bulk::revoke_blast_radius(&self.app, transaction_id.clone(), request.into_inner())
            .await
            .map_err(admin_status)?;
        Ok(reply(answer, &transaction_id))
    }
}

impl AdminGrpc {
    async fn user_change(&self, request: Request<GetUserRequest>, kind: UserChange) -> Result<Response<User>, Status> {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let user = directory::change_user(&self.app, transaction_id.clone(), request.into_inner(), kind)
            .await
            .map_err(admin_status)?;
        Ok(reply(user, &transaction_id))
    }
}
