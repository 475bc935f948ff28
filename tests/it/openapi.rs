//! `/openapi.json` against the real router, both ways: every documented operation answers
//! (neither 404 nor 405) with its method, and every route of the router is documented with
//! exactly the methods it accepts.

use std::collections::{BTreeMap, BTreeSet};

use crate::harness::*;

/// The route paths of the real router, read from its `Debug` form (axum has no public route
/// listing; `Node` prints `paths: {RouteId(n): "/path", ...}`).
fn router_paths(server: &TestServer) -> BTreeSet<String> {
    let debug = format!("{:?}", tokenledger::rest_router(server.app.clone()));
    let mut paths = BTreeSet::new();
    for piece in debug.split("RouteId(").skip(1) {
        // `3): "/oauth2/v1/token"` — a route id followed by its path.
        let Some(rest) = piece.split_once("): \"").map(|(_, rest)| rest) else { continue };
        if let Some((path, _)) = rest.split_once('"') {
            paths.insert(path.to_owned());
        }
    }
    assert!(paths.len() >= 10, "could not read the routes from the router's Debug form: {debug}");
    // `Router::fallback` registers "/" and a catch-all for itself (checked below to be the
    // fallback's 404, not a route).
    paths.retain(|p| !p.contains("__private__axum"));
    paths
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "sample-id")
}

/// The methods a route accepts, from the `Allow` header of a 405 to a method no route uses.
async fn allowed_methods(server: &TestServer, path: &str) -> BTreeSet<String> {
    let reply = server.http.request(reqwest::Method::PATCH, server.url(&concrete(path))).send().await.unwrap();
    assert_eq!(reply.status(), 405, "{path} answers PATCH");
    let allow = reply.headers().get("allow").unwrap_or_else(|| panic!("{path}: 405 without Allow")).to_str().unwrap();
    allow.split(',').map(|m| m.trim().to_ascii_lowercase()).filter(|m| !m.is_empty() && m != "head").collect()
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_the_router_serves() {
    let server = TestServer::start().await;
    let reply = server.http.get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let text = reply.text().await.unwrap();
    // A structurally valid OpenAPI 3.0 document.
    let parsed: openapiv3::OpenAPI = serde_json::from_str(&text).unwrap();
    assert!(parsed.openapi.starts_with("3.0"));
    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    let documented: BTreeMap<String, BTreeSet<String>> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| (path.clone(), item.as_object().unwrap().keys().cloned().collect()))
        .collect();

    let mut routes = router_paths(&server);
    if routes.remove("/") {
        let root = server.http.get(server.url("/")).send().await.unwrap();
        assert_eq!(root.status(), 404, "\"/\" is a route: document it");
    }
    let documented_paths: BTreeSet<String> = documented.keys().cloned().collect();
    assert_eq!(routes, documented_paths, "router paths (left) and documented paths (right) differ");
    let listed: BTreeSet<String> = tokenledger::rest_paths().iter().map(|p| (*p).to_owned()).collect();
    assert_eq!(listed, documented_paths, "openapi::paths() (the metrics labels) must list every documented path");

    for (path, methods) in &documented {
        assert_eq!(&allowed_methods(&server, path).await, methods, "methods of {path}");
        for method in methods {
            let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let reply = server.http.request(method.clone(), server.url(&concrete(path))).send().await.unwrap();
            let status = reply.status().as_u16();
            assert!(status != 404 && status != 405, "{method} {path} answered {status}");
            // Every operation names an operationId and its responses.
            let operation = &document["paths"][path][method.as_str().to_ascii_lowercase()];
            assert!(operation["operationId"].is_string() && operation["responses"].is_object(), "{path}");
        }
    }
    // Security schemes used by the operations exist.
    let schemes = document["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("basicAuth") && schemes.contains_key("bearerAuth"));
    assert_eq!(document["servers"][0]["url"], server.app.config.issuer);
}

/// Generated clients and contract testers (schemathesis) take the document at its word: a
/// required form field must say it cannot be empty (an empty value counts as absent, so the
/// server refuses it), and every string field must say it is printable ASCII (CMN_90017).
#[tokio::test]
async fn required_form_fields_declare_min_length_and_every_field_a_pattern() {
    let server = TestServer::start().await;
    let document: serde_json::Value =
        server.http.get(server.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let schemas = &document["components"]["schemas"];
    let resolve = |schema: &serde_json::Value| -> serde_json::Value {
        match schema["$ref"].as_str() {
            Some(reference) => schemas[reference.trim_start_matches("#/components/schemas/")].clone(),
            None => schema.clone(),
        }
    };
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(body) =
                operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"].as_object()
            else {
                continue;
            };
            let body = resolve(&serde_json::Value::Object(body.clone()));
            let objects: Vec<serde_json::Value> = match body["oneOf"].as_array() {
                Some(branches) => branches.iter().map(resolve).collect(),
                None => vec![body],
            };
            for object in objects {
                let required: Vec<&str> =
                    object["required"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
                for (name, field) in object["properties"].as_object().unwrap() {
                    let at = format!("{method} {path} {name}");
                    if field["not"] == serde_json::json!({}) {
                        continue; // "must be absent" in this shape of the form
                    }
                    assert!(field["pattern"].is_string() || field["enum"].is_array(), "{at}: no pattern or enum");
                    if required.contains(&name.as_str()) && !field["enum"].is_array() {
                        assert!(
                            field["minLength"].as_u64().is_some_and(|n| n >= 1),
                            "{at}: required without minLength"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} fields found");
    // The document's claim holds: an empty required value is refused.
    let (server, f) = TestServer::seeded().await;
    let reply = server.post_form("/oauth2/v1/revoke", Some(&f.app), &[("transactionId", &txid())], "token=").await;
    reply.assert_error(400, "CMN_90011");
    let reply = server.token(&f.app, "grant_type=password&username=&password=x").await;
    reply.assert_error(400, "CMN_90013");
}
