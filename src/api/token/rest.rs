//! The /oauth2/v1 token, revocation and introspection endpoints over REST: axum handlers that
//! translate HTTP to the shared flows in `flow.rs` and render answers per SPEC section 3.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;

use super::flow::{self as token, TokenReply};
use crate::api::app::App;
use crate::api::rest::{echo_transaction_id, error_response, no_store, read_call};

/// The token service's REST routes, merged into the router in `api/rest.rs`.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/oauth2/v1/token", post(create_token))
        .route("/oauth2/v1/revoke", post(revoke_token).delete(revoke_token))
        .route("/oauth2/v1/introspect", post(introspect_token))
}

#[derive(Serialize)]
#[serde(untagged)]
enum Seconds {
    Number(i64),
    Text(String),
}

#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: Seconds,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token_expires_in: Option<Seconds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<&'a str>,
}

fn token_body(app: &App, reply: &TokenReply) -> Response {
    let seconds = |n: i64| {
        if app.config.expires_in_as_string { Seconds::Text(n.to_string()) } else { Seconds::Number(n) }
    };
    let body = TokenBody {
        access_token: &reply.access_token,
        token_type: "Bearer",
        expires_in: seconds(reply.expires_in),
        scope: &reply.scope,
        refresh_token: reply.refresh_token.as_ref().map(|(t, _)| t.as_str()),
        refresh_token_expires_in: reply.refresh_token.as_ref().map(|(_, n)| seconds(*n)),
        id_token: reply.id_token.as_deref(),
    };
    axum::Json(body).into_response()
}

async fn create_token(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let call = match read_call(&app, &uri, &headers, body).await {
        Ok(call) => call,
        Err((code, transaction_id)) => return error_response(code, transaction_id.as_deref()),
    };
    let transaction_id = call.transaction_id.clone();
    let mut response = match token::create_token(&app, call).await {
        Ok(reply) => token_body(&app, &reply),
        Err(code) => return error_response(code, Some(&transaction_id)),
    };
    echo_transaction_id(&mut response, Some(&transaction_id));
    no_store(&mut response);
    response
}

/// DELETE answers 204, as Candescent documents; POST answers 200, as RFC 7009 section 2.2
/// specifies and standard clients (oauth4webapi, openid-client) require. Both with no body.
async fn revoke_token(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = match read_call(&app, &uri, &headers, body).await {
        Ok(call) => call,
        Err((code, transaction_id)) => return error_response(code, transaction_id.as_deref()),
    };
    let transaction_id = call.transaction_id.clone();
    match token::revoke_token(&app, call).await {
        Ok(()) => {
            let status = if method == Method::DELETE { StatusCode::NO_CONTENT } else { StatusCode::OK };
            let mut response = status.into_response();
            echo_transaction_id(&mut response, Some(&transaction_id));
            response
        }
        Err(code) => error_response(code, Some(&transaction_id)),
    }
}

async fn introspect_token(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let call = match read_call(&app, &uri, &headers, body).await {
        Ok(call) => call,
        Err((code, transaction_id)) => return error_response(code, transaction_id.as_deref()),
    };
    let transaction_id = call.transaction_id.clone();
    let mut response = match token::introspect_token(&app, call).await {
        Ok(answer) => axum::Json(&answer).into_response(),
        Err(code) => return error_response(code, Some(&transaction_id)),
    };
    echo_transaction_id(&mut response, Some(&transaction_id));
    no_store(&mut response);
    response
}
