//! Cluster mode: a write that reaches a follower is passed on whole to the leader over the Raft
//! listener (`RaftService/Forward`, authenticated like all Raft traffic), and the caller gets the
//! leader's answer, head, body and trailers (SPEC 8). One hop: the leader answers a forwarded
//! request itself, and a node that no longer leads answers it fail-closed through its writer.
//! No leader known: CMN_90019 over REST, UNAVAILABLE over gRPC, nothing applied.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt as _;

use super::front::{ConnInfo, Front};
use crate::api::error::ErrorCode;
use crate::api::rest::{error_response, header_values};
use crate::api::wire;
use crate::proto::cluster::{ForwardHeader, ForwardRequest, ForwardResponse};
use crate::replication::network::{Forwarder, WIRE_VERSION};
use crate::replication::node::ClusterNode;

const TRANSACTION_ID: HeaderName = HeaderName::from_static("transactionid");

/// REST paths whose POST changes the ledger (token, revocation, codes).
const REST_WRITES: [&str; 6] = [
    "/oauth2/v1/token",
    "/oauth2/v1/revoke",
    "/v1/client-authorization",
    "/auth-code/v1/client-authorization",
    "/v1/auth-code",
    "/auth-code/v1/auth-code",
];

/// True for a request that changes the ledger, which a follower passes on to the leader. Reads
/// (introspection, lookups, audit, discovery, health, cluster status) are answered locally.
pub fn is_write<B>(request: &Request<B>, grpc: bool) -> bool {
    let path = request.uri().path();
    if !grpc {
        return request.method() == Method::POST && REST_WRITES.contains(&path);
    }
    (path.starts_with("/tokenledger.v1.TokenService/") && path != "/tokenledger.v1.TokenService/IntrospectToken")
        || path.starts_with("/tokenledger.v1.AdminService/")
        || path == "/tokenledger.v1.KeyService/RotateSigningKey"
}

/// The answer of a write while no leader can take it.
fn fail_closed(grpc: bool, transaction_id: Option<&str>) -> Response {
    if grpc {
        return tonic::Status::unavailable(
            "no leader: the cluster takes no writes now; retry with the same transactionId",
        )
        .into_http();
    }
    error_response(ErrorCode::TokenNotRecorded, transaction_id)
}

fn headers_to_wire(headers: &HeaderMap) -> Vec<ForwardHeader> {
    headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "connection" | "content-length" | "transfer-encoding" | "te"))
        .map(|(name, value)| ForwardHeader { name: name.as_str().to_owned(), value: value.as_bytes().to_vec() })
        .collect()
}

fn headers_from_wire(headers: Vec<ForwardHeader>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for header in headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(header.name.as_bytes()), HeaderValue::from_bytes(&header.value))
        {
            map.append(name, value);
        }
    }
    map
}

/// Passes `request` on to the leader `node` knows and answers with the leader's response.
pub async fn to_leader(
    node: &ClusterNode,
    request: Request<Body>,
    grpc: bool,
    conn: ConnInfo,
    limit: usize,
    timeout: std::time::Duration,
) -> Response {
    let transaction_id = wire::transaction_id(header_values(request.headers(), &TRANSACTION_ID)).ok();
    let transaction_id = transaction_id.as_deref();
    let view = node.view();
    let Some(leader) = view.leader.filter(|leader| *leader != view.id) else {
        return fail_closed(grpc, transaction_id);
    };
    let Some(info) = view.members.iter().find(|(id, _, _)| *id == leader).map(|(_, info, _)| info.clone()) else {
        return fail_closed(grpc, transaction_id);
    };
    let (parts, body) = request.into_parts();
    let body = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) if grpc => return tonic::Status::resource_exhausted("message too large").into_http(),
        Err(_) => {
            let mut response = error_response(ErrorCode::InvalidRequest, transaction_id);
            *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return response;
        }
    };
    let message = ForwardRequest {
        version: WIRE_VERSION,
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: headers_to_wire(&parts.headers),
        body: body.to_vec(),
        peer: conn.peer.map(|ip| ip.to_string()).unwrap_or_default(),
    };
    match node.network.forward(leader, &info, message, timeout).await {
        Ok(answer) => response_from_wire(answer),
        Err(error) => {
            tracing::warn!(leader, %error, "a write could not be passed on to the leader");
            fail_closed(grpc, transaction_id)
        }
    }
}

fn response_from_wire(answer: ForwardResponse) -> Response {
    let status = u16::try_from(answer.status).ok().and_then(|s| StatusCode::from_u16(s).ok());
    let headers = headers_from_wire(answer.headers);
    let body = Bytes::from(answer.body);
    let body = if answer.trailers.is_empty() {
        Body::from(body)
    } else {
        let trailers = headers_from_wire(answer.trailers);
        let frames =
            [Ok::<_, std::convert::Infallible>(http_body::Frame::data(body)), Ok(http_body::Frame::trailers(trailers))];
        Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status.unwrap_or(StatusCode::BAD_GATEWAY);
    *response.headers_mut() = headers;
    response
}

/// The leader's side: a forwarded request answered by this node's front door as if its caller
/// had asked here (its client certificate was the follower's concern, as the admin credential
/// is checked again here).
pub struct FrontForwarder(pub Arc<Front>);

impl Forwarder for FrontForwarder {
    fn forward(
        &self,
        message: ForwardRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ForwardResponse> + Send + 'static>> {
        let front = self.0.clone();
        Box::pin(async move {
            let mut builder = Request::builder().method(message.method.as_str()).uri(message.path.as_str());
            if let Some(headers) = builder.headers_mut() {
                *headers = headers_from_wire(message.headers);
            }
            let Ok(request) = builder.body(Body::from(message.body)) else {
                return ForwardResponse { status: 400, ..Default::default() };
            };
            let grpc = super::front::is_grpc(&request);
            let conn = ConnInfo { client_certificate: true, peer: message.peer.parse().ok(), forwarded: true };
            let response = front.respond(request, grpc, conn).await;
            let (parts, body) = response.into_parts();
            let (body, trailers) = match body.collect().await {
                Ok(collected) => {
                    let trailers = collected.trailers().map(headers_to_wire).unwrap_or_default();
                    (collected.to_bytes().to_vec(), trailers)
                }
                Err(_) => return ForwardResponse { status: 500, ..Default::default() },
            };
            ForwardResponse {
                status: u32::from(parts.status.as_u16()),
                headers: headers_to_wire(&parts.headers),
                body,
                trailers,
            }
        })
    }
}
