//! Limits of the listener through raw sockets and real clients: oversized and too many headers,
//! slow-drip bodies and heads, idle connections, the connection and in-flight limits, and the
//! gRPC decoding limit of every service.

use std::time::{Duration, Instant};

use tokenledger::proto::{self as api};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// Reads until the peer closes or `limit` passes; returns what was read and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut buffer = Vec::new();
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&buffer).into_owned(), true),
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
            Err(_) => return (String::from_utf8_lossy(&buffer).into_owned(), false),
        }
    }
}

/// The status line of the first response in `text`.
fn status_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

async fn healthy(server: &TestServer) {
    let reply = server.http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(reply.status(), 200);
}

#[tokio::test]
async fn oversized_and_too_many_headers_get_431_and_the_server_keeps_serving() {
    let (server, f) = TestServer::seeded().await;
    let basic = tokenledger::wire::encode_basic(&f.service.id, &f.service.secret);
    for big in ["A".repeat(16 * 1024), "A".repeat(64 * 1024), "A".repeat(1024 * 1024)] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST /oauth2/v1/token HTTP/1.1\r\nHost: x\r\nAuthorization: {basic}\r\nX-Big: {big}\r\nContent-Length: 0\r\n\r\n"
        );
        // The server may close before reading all of a 1 MiB head.
        let _ = stream.write_all(head.as_bytes()).await;
        let (text, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(status_line(&text), "HTTP/1.1 431 Request Header Fields Too Large", "{}", big.len());
    }
    // A 16 KiB Authorization header, the checklist's case.
    let reply = server
        .http
        .post(server.url("/oauth2/v1/token"))
        .header("authorization", format!("Basic {}", "A".repeat(16 * 1024)))
        .header("transactionId", txid())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 431);
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..100 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (text, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(status_line(&text), "HTTP/1.1 431 Request Header Fields Too Large");
    // A 10 KB transactionId is still the application's to refuse (CMN_90008, checklist 2.10).
    let reply =
        server.post_form("/oauth2/v1/token", Some(&f.service), &[("transactionId", &"a".repeat(10_000))], "").await;
    reply.assert_error(400, "CMN_90008");
    healthy(&server).await;
}

#[tokio::test]
async fn oversized_grpc_metadata_fails_the_call_not_the_server() {
    let (server, f) = TestServer::seeded().await;
    let mut client = server.token_client().await;
    let mut request = tonic::Request::new(api::IntrospectTokenRequest { token: "x".into() });
    request.metadata_mut().insert("x-big", "A".repeat(64 * 1024).parse().unwrap());
    assert!(client.introspect_token(request).await.is_err());
    // A fresh connection works.
    let mut client = server.token_client().await;
    let mut request = tonic::Request::new(api::IntrospectTokenRequest { token: "x".into() });
    request
        .metadata_mut()
        .insert("authorization", tokenledger::wire::encode_basic(&f.service.id, &f.service.secret).parse().unwrap());
    request.metadata_mut().insert("transactionid", txid().parse().unwrap());
    assert!(!client.introspect_token(request).await.unwrap().into_inner().active);
}

#[tokio::test]
async fn a_slow_drip_body_is_answered_408_and_the_connection_closed() {
    let (server, f) = {
        let server = TestServer::start_with(|s| s.request_timeout_secs = Some(1)).await;
        let f = server.seed().await;
        (server, f)
    };
    let basic = tokenledger::wire::encode_basic(&f.service.id, &f.service.secret);
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /oauth2/v1/token HTTP/1.1\r\nHost: x\r\nAuthorization: {basic}\r\ntransactionId: {}\r\n\
         institutionId: {INSTITUTION}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n",
        txid()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let drip = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b"g").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut text = String::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), reader.read_to_string(&mut text)).await;
    drip.abort();
    assert!(closed.is_ok(), "the connection stayed open");
    assert_eq!(status_line(&text), "HTTP/1.1 408 Request Timeout", "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    healthy(&server).await;
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    let server = TestServer::start_with(|s| {
        s.request_timeout_secs = Some(1);
        s.idle_timeout_secs = Some(1);
    })
    .await;
    // A head that never completes (slowloris).
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // A connection that never sends anything.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // A keep-alive connection after one request.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    for (name, stream) in [("slow head", &mut slow), ("silent", &mut silent), ("idle keep-alive", &mut kept)] {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(10)).await;
        assert!(closed, "{name} connection was not closed");
    }
    healthy(&server).await;
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let server = TestServer::start_with(|s| s.connections_max = Some(2)).await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let _second = TcpStream::connect(server.addr).await.unwrap();
    // Give the accept loop time to take both slots.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let (text, _) = read_until_closed(&mut third, Duration::from_millis(700)).await;
    assert_eq!(text, "", "the third connection was served while two were open");
    drop(first);
    let (text, closed) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(closed);
    assert_eq!(status_line(&text), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_wait_for_a_slot() {
    let server = TestServer::start_with(|s| s.requests_in_flight_max = Some(1)).await;
    // The first request holds the only slot while its body trickles in.
    let mut holder = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /oauth2/v1/introspect HTTP/1.1\r\nHost: x\r\ntransactionId: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\ntok",
        txid()
    );
    holder.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = tokio::spawn({
        let url = server.url("/healthz");
        let http = server.http.clone();
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the second request did not wait for a slot");
    holder.write_all(b"en=".as_ref()).await.unwrap();
    holder.write_all(b"x").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(status, 200);
    let (text, _) = read_until_closed(&mut holder, Duration::from_millis(500)).await;
    assert!(status_line(&text).starts_with("HTTP/1.1 401"), "{text}");
}

/// Sends `bytes` as the message of the unary gRPC method at `path` (any message type: the
/// limit applies before decoding).
async fn raw_grpc_call(server: &TestServer, path: &'static str, bytes: usize) -> tonic::Status {
    raw_grpc_call_as(server, path, bytes, None).await
}

/// [`raw_grpc_call`] with `authorization: Bearer <bearer>` when given.
async fn raw_grpc_call_as(
    server: &TestServer,
    path: &'static str,
    bytes: usize,
    bearer: Option<&str>,
) -> tonic::Status {
    let channel = server.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    // A big string field; the limit applies before the message is decoded, so its type does not matter.
    let message = api::CreateInstitutionRequest { institution_id: String::new(), name: "n".repeat(bytes) };
    let codec = tonic_prost::ProstCodec::<api::CreateInstitutionRequest, api::Institution>::default();
    let path = http::uri::PathAndQuery::from_static(path);
    let mut request = tonic::Request::new(message);
    if let Some(bearer) = bearer {
        request.metadata_mut().insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    }
    match grpc.unary(request, path, codec).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

#[tokio::test]
async fn every_grpc_service_has_a_decoding_limit() {
    let server = TestServer::start().await;
    let over = 300 * 1024;
    // The services of the admin credential are asked with it (without, they refuse first).
    let admin = server.admin_token();
    for path in [
        "/tokenledger.v1.TokenService/CreateToken",
        "/tokenledger.v1.TokenService/IntrospectToken",
        "/tokenledger.v1.InstitutionUserService/GetInstitutionUser",
        "/tokenledger.v1.KeyService/RotateSigningKey",
        "/grpc.health.v1.Health/Check",
    ] {
        let status = raw_grpc_call_as(&server, path, over, Some(&admin)).await;
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{path}: {status:?}");
    }
    // AdminService too, for every method but Import.
    let status = raw_grpc_call_as(&server, "/tokenledger.v1.AdminService/CreateInstitution", over, Some(&admin)).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // Import takes bulk set-up: 16 MiB, for a caller with the admin credential.
    let status = raw_grpc_call_as(&server, "/tokenledger.v1.AdminService/Import", over, Some(&admin)).await;
    assert_ne!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let huge = 17 * 1024 * 1024;
    let status = raw_grpc_call_as(&server, "/tokenledger.v1.AdminService/Import", huge, Some(&admin)).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // Without it, Import is refused before its message is read.
    let status = raw_grpc_call(&server, "/tokenledger.v1.AdminService/Import", over).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    healthy(&server).await;
}

/// Security review finding 7: AdminService decoded messages of up to 16 MiB before it checked
/// the admin credential, so anyone could make the server buffer 16 MiB per request. The front
/// door now checks the credential before the body is read: a call that announces a 15 MiB
/// message and sends only its first 64 KiB is answered UNAUTHENTICATED at once (it used to
/// wait for the rest of the message), for every service of the admin credential.
#[tokio::test]
async fn finding_7_admin_services_refuse_a_wrong_credential_before_reading_the_message() {
    let server = TestServer::start().await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    for path in [
        "/tokenledger.v1.AdminService/Import",
        "/tokenledger.v1.AdminService/CreateInstitution",
        "/tokenledger.v1.AuditService/StreamEvents",
        "/tokenledger.v1.KeyService/RotateSigningKey",
    ] {
        h2 = h2.ready().await.unwrap();
        let request = http::Request::post(format!("http://{}{path}", server.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", "Bearer nope")
            .body(())
            .unwrap();
        let (response, mut body) = h2.send_request(request, false).unwrap();
        // A gRPC frame header announcing 15 MiB, then only the start of the message.
        let mut start = vec![0u8];
        start.extend_from_slice(&(15u32 * 1024 * 1024).to_be_bytes());
        start.resize(64 * 1024, b'x');
        body.send_data(start.into(), false).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer before the whole message was sent"))
            .unwrap();
        let status = response.headers().get("grpc-status").and_then(|v| v.to_str().ok());
        assert_eq!(status, Some("16"), "{path}: {:?}", response.headers());
    }
    let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("tokenledger_admin_credential_refusals_total 4"), "{text}");
    healthy(&server).await;
}

/// A TCP connection to the server from the loopback address `from` (127.0.0.0/8 all reach it).
async fn connect_from(server: &TestServer, from: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(server.addr).await.unwrap()
}

/// Security review finding 6 (slot exhaustion): one host could open every connection slot and
/// lock everyone else out. With `connections_per_peer_max` a peer's connections beyond the cap
/// are closed at once, and other peers are still served.
#[tokio::test]
async fn finding_6_a_peer_beyond_its_connection_cap_is_closed_and_others_are_served() {
    let server = TestServer::start_with(|s| s.connections_per_peer_max = Some(2)).await;
    let first = connect_from(&server, "127.0.0.1").await;
    let second = connect_from(&server, "127.0.0.1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect_from(&server, "127.0.0.1").await;
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let (text, closed) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(closed && text.is_empty(), "the third connection of one peer was served: {text:?}");
    let mut other = connect_from(&server, "127.0.0.2").await;
    other.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let (text, _) = read_until_closed(&mut other, Duration::from_secs(5)).await;
    assert_eq!(status_line(&text), "HTTP/1.1 200 OK");
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("tokenledger_connections_refused_per_peer_total 1"), "{text}");
}

/// Security review finding 6 (pinning): a connection that sends nothing held its slot for the
/// idle timeout (120 s). A new connection now has `first_request_timeout_secs` to begin its
/// first request; one that did is kept as before.
#[tokio::test]
async fn finding_6_a_connection_without_a_first_request_is_closed_after_the_deadline() {
    let server = TestServer::start_with(|s| s.first_request_timeout_secs = Some(1)).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut used = TcpStream::connect(server.addr).await.unwrap();
    used.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    for (name, stream) in [("silent", &mut silent), ("half a head", &mut half)] {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(5)).await;
        assert!(closed, "the {name} connection was not closed");
    }
    // The connection that made a request is still open well after the deadline.
    let (text, closed) = read_until_closed(&mut used, Duration::from_millis(500)).await;
    assert!(!closed && status_line(&text) == "HTTP/1.1 200 OK", "{text}");
    used.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let (text, _) = read_until_closed(&mut used, Duration::from_secs(5)).await;
    assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
}

/// Security review finding 6 (streams): an open gRPC health `Watch` (or reflection) stream
/// needs no credential and kept its connection busy for ever. It now ends after
/// `unauthenticated_stream_max_secs` with UNAVAILABLE, and the client may call again.
#[tokio::test]
async fn finding_6_an_unauthenticated_health_watch_ends_after_its_lifetime() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let server = TestServer::start_with(|s| s.unauthenticated_stream_max_secs = Some(1)).await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert!(watch.message().await.unwrap().is_some(), "the first status");
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.expect("the watch never ended");
    let status = ended.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // Calling again works.
    let mut again = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert!(again.message().await.unwrap().is_some());
}
