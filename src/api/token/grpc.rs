//! TokenService (token.proto) over gRPC: metadata mirrors the REST headers; errors carry the
//! CMN code in the status message and a google.rpc.ErrorInfo (`grpc_util::status`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::app::App;
use crate::api::grpc_util::{call, reply, status};
use crate::api::token::flow::{self as token, Introspection};
use crate::proto::token_service_server::TokenService;
use crate::proto::*;

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
        crate::api::authcode::grpc::authorize_client(&self.app, request)
    }

    async fn create_authorization_code(
        &self,
        request: Request<CreateAuthorizationCodeRequest>,
    ) -> Result<Response<CreateAuthorizationCodeResponse>, Status> {
        crate::api::authcode::grpc::create_authorization_code(&self.app, request).await
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
