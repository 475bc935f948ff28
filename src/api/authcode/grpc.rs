//! gRPC of the authorization-code flow (TokenService.AuthorizeClient and
//! CreateAuthorizationCode: the bearer credential comes in `authorization: Bearer ...`
//! metadata).
use tonic::{Request, Response, Status};

use crate::api::app::App;
use crate::api::authcode::flow as authcode;
use crate::api::grpc_util::{call, metadata_values, reply, status};
use crate::api::wire;
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
