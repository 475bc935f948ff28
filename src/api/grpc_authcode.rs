//! gRPC of the authorization-code flow (TokenService.AuthorizeClient and
//! CreateAuthorizationCode: the bearer credential comes in `authorization: Bearer ...`
//! metadata) and KeyService (admin credential).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::key_status;
use super::grpc::{admin_call, call, metadata_values, reply, status};
use super::{authcode, signing, wire};
use crate::app::App;
use crate::proto::key_service_server::KeyService;
use crate::proto::*;

fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    wire::bearer_token(metadata_values(metadata, "authorization")).map(str::to_owned)
}

pub fn authorize_client(
    app: &App,
    request: Request<AuthorizeClientRequest>,
) -> Result<Response<AuthorizeClientResponse>, Status> {
    let call = call(request.metadata(), &[("client_id", request.get_ref().client_id.as_str())])?;
    let transaction_id = call.transaction_id.clone();
    let answer = authcode::authorize_client(app, &call, bearer(request.metadata()).as_deref())
        .map_err(|code| status(code, Some(&transaction_id)))?;
    let message = AuthorizeClientResponse {
        scopes: answer.scopes,
        app_id: answer.app_id,
        additional_info: Some(ClientAdditionalInfo {
            secondary_authentication_enabled: answer.secondary_authentication_enabled,
            consent_enabled: answer.consent_enabled,
            device_registration_enabled: answer.device_registration_enabled,
        }),
    };
    Ok(reply(message, &transaction_id))
}

pub async fn create_authorization_code(
    app: &App,
    request: Request<CreateAuthorizationCodeRequest>,
) -> Result<Response<CreateAuthorizationCodeResponse>, Status> {
    let r = request.get_ref();
    let fields = [
        ("client_id", r.client_id.as_str()),
        ("scopes", r.scopes.as_str()),
        ("username", r.username.as_str()),
        ("institution_user_id", r.institution_user_id.as_str()),
        ("requested_scopes", r.requested_scopes.as_str()),
        ("nonce", r.nonce.as_str()),
        ("aud", r.aud.as_str()),
        ("auth_time", r.auth_time.as_str()),
        ("code_challenge", r.code_challenge.as_str()),
        ("code_challenge_method", r.code_challenge_method.as_str()),
    ];
    let call = call(request.metadata(), &fields)?;
    let transaction_id = call.transaction_id.clone();
    let answer = authcode::create_authorization_code(app, call, bearer(request.metadata()).as_deref())
        .await
        .map_err(|code| status(code, Some(&transaction_id)))?;
    Ok(reply(CreateAuthorizationCodeResponse { code: answer.code, redirect_uri: answer.redirect_uri }, &transaction_id))
}

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
