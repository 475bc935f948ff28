//! The gRPC transport (tonic): TokenService and AdminService. Metadata mirrors the REST
//! headers; errors carry the CMN code in the status message and a google.rpc.ErrorInfo.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, header};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::admin::{self, AdminError, DirectoryErrorKind};
use super::directory::{self, UserChange};
use super::form::Params;
use super::rest::header_values;
use super::token::{self, Call, Introspection};
use super::wire::{self, HeaderValues, Institution};
use crate::app::App;
use crate::error::ErrorCode;
use crate::proto::admin_service_server::AdminService;
use crate::proto::token_service_server::TokenService;
use crate::proto::*;

/// The `domain` of every ErrorInfo we send.
pub const ERROR_DOMAIN: &str = "tokenledger";

// The metadata every TokenService call reads and answers with, as `HeaderName`s: a `&str` key
// is parsed into one (validated, lower-cased, copied) at every lookup.
const TRANSACTION_ID: HeaderName = HeaderName::from_static("transactionid");
const INSTITUTION_ID: HeaderName = HeaderName::from_static("institutionid");

/// All values of one metadata key, as the validators want them.
pub(super) fn metadata_values<'a>(metadata: &'a MetadataMap, key: &str) -> HeaderValues<'a> {
    let mut values = metadata.get_all(key).iter();
    match (values.next(), values.next()) {
        (None, _) => HeaderValues::Absent,
        (Some(one), None) => HeaderValues::One(one.as_bytes()),
        (Some(_), Some(_)) => HeaderValues::Repeated,
    }
}

/// The status for a CMN error: code per SPEC section 4, message "CMN_9xxxx: <message>",
/// ErrorInfo { reason: CMN code, domain: "tokenledger" }, and the echoed transaction id.
pub fn status(code: ErrorCode, transaction_id: Option<&str>) -> Status {
    let info = code.info();
    let details = ErrorDetails::with_error_info(
        info.code,
        ERROR_DOMAIN,
        HashMap::from([("message".to_owned(), info.message.to_owned())]),
    );
    let mut status = Status::with_error_details(info.grpc_code, format!("{}: {}", info.code, info.message), details);
    echo(status.metadata_mut(), transaction_id);
    status
}

fn echo(metadata: &mut MetadataMap, transaction_id: Option<&str>) {
    if let Some(value) = transaction_id.and_then(|t| HeaderValue::from_str(t).ok()) {
        metadata.as_mut().insert(TRANSACTION_ID, value);
    }
}

pub(super) fn reply<T>(message: T, transaction_id: &str) -> Response<T> {
    let mut response = Response::new(message);
    echo(response.metadata_mut(), Some(transaction_id));
    response
}

/// Builds the shared [`Call`] from metadata and message fields.
pub(super) fn call(metadata: &MetadataMap, fields: &[(&str, &str)]) -> Result<Call, Status> {
    let headers = metadata.as_ref();
    let transaction_id =
        wire::transaction_id(header_values(headers, &TRANSACTION_ID)).map_err(|code| status(code, None))?;
    let params = Params::from_pairs(fields.iter().copied()).map_err(|code| status(code, Some(&transaction_id)))?;
    Ok(Call {
        institution: Institution::parse(header_values(headers, &INSTITUTION_ID)),
        credentials: wire::basic_credentials(header_values(headers, &header::AUTHORIZATION)),
        params,
        transaction_id,
    })
}

pub struct TokenGrpc {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl TokenService for TokenGrpc {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let r = request.get_ref();
        let fields = [
            ("grant_type", r.grant_type.as_str()),
            ("scopes", r.scopes.as_str()),
            ("username", r.username.as_str()),
            ("password", r.password.as_str()),
            ("refresh_token", r.refresh_token.as_str()),
            ("code", r.code.as_str()),
            ("code_verifier", r.code_verifier.as_str()),
            ("redirect_uri", r.redirect_uri.as_str()),
        ];
        let call = call(request.metadata(), &fields)?;
        let transaction_id = call.transaction_id.clone();
        let answer = token::create_token(&self.app, call).await.map_err(|code| status(code, Some(&transaction_id)))?;
        let (refresh_token, refresh_token_expires_in) = answer.refresh_token.unwrap_or_default();
        let message = CreateTokenResponse {
            access_token: answer.access_token,
            token_type: "Bearer".to_owned(),
            expires_in: answer.expires_in,
            refresh_token,
            refresh_token_expires_in,
            scope: answer.scope,
            id_token: answer.id_token.unwrap_or_default(),
        };
        Ok(reply(message, &transaction_id))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let call = call(request.metadata(), &[("token", request.get_ref().token.as_str())])?;
        let transaction_id = call.transaction_id.clone();
        token::revoke_token(&self.app, call).await.map_err(|code| status(code, Some(&transaction_id)))?;
        Ok(reply(RevokeTokenResponse {}, &transaction_id))
    }

    async fn introspect_token(
        &self,
        request: Request<IntrospectTokenRequest>,
    ) -> Result<Response<IntrospectTokenResponse>, Status> {
        let call = call(request.metadata(), &[("token", request.get_ref().token.as_str())])?;
        let transaction_id = call.transaction_id.clone();
        let answer =
            token::introspect_token(&self.app, call).await.map_err(|code| status(code, Some(&transaction_id)))?;
        Ok(reply(introspection_message(answer), &transaction_id))
    }

    async fn authorize_client(
        &self,
        request: Request<AuthorizeClientRequest>,
    ) -> Result<Response<AuthorizeClientResponse>, Status> {
        super::grpc_authcode::authorize_client(&self.app, request)
    }

    async fn create_authorization_code(
        &self,
        request: Request<CreateAuthorizationCodeRequest>,
    ) -> Result<Response<CreateAuthorizationCodeResponse>, Status> {
        super::grpc_authcode::create_authorization_code(&self.app, request).await
    }
}

fn introspection_message(i: Introspection) -> IntrospectTokenResponse {
    IntrospectTokenResponse {
        active: i.active,
        scope: i.scope.unwrap_or_default(),
        client_id: i.client_id.unwrap_or_default(),
        username: i.username.unwrap_or_default(),
        sub: i.sub.unwrap_or_default(),
        token_type: i.token_type.unwrap_or_default().to_owned(),
        exp: i.exp.unwrap_or_default(),
        iat: i.iat.unwrap_or_default(),
        iss: i.iss.unwrap_or_default(),
        institution_id: i.institution_id.unwrap_or_default(),
        grant_type: i.grant_type.unwrap_or_default().to_owned(),
        institution_user_id: i.institution_user_id.unwrap_or_default(),
        host_user_id: i.host_user_id.unwrap_or_default(),
    }
}

/// Checks the admin credential and returns the transaction id to record (the caller's, or a
/// fresh one when it sent none).
pub fn admin_call(app: &App, metadata: &MetadataMap) -> Result<String, Status> {
    if !app.is_admin(wire::bearer_token(metadata_values(metadata, "authorization"))) {
        return Err(Status::unauthenticated("the admin credential (Bearer <admin.token>) is required"));
    }
    match metadata_values(metadata, "transactionid") {
        HeaderValues::Absent => Ok(uuid::Uuid::new_v4().to_string()),
        value => wire::transaction_id(value).map_err(|code| status(code, None)),
    }
}

pub fn admin_status(error: AdminError) -> Status {
    match error {
        AdminError::Directory(text, DirectoryErrorKind::Invalid) => Status::invalid_argument(text),
        AdminError::Directory(text, DirectoryErrorKind::AlreadyExists) => Status::already_exists(text),
        AdminError::Directory(text, DirectoryErrorKind::NotFound) => Status::not_found(text),
        AdminError::Directory(text, DirectoryErrorKind::Conflict) => Status::failed_precondition(text),
        AdminError::Unavailable => Status::unavailable("the ledger is not accepting writes"),
    }
}

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
