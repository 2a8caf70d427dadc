//! The OpenAPI document (`GET /api/v1/openapi.json`): the copy kept in `docs/openapi.json` is
//! what the server serves, it names exactly the routes of API.md, and the router serves
//! exactly the operations it names (no more, no fewer).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::{Backend, TestApp, spawn_on};

/// Where the repository keeps the document.
const KEPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");

/// Every method a route could have.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

async fn served(app: &TestApp) -> (String, Value) {
    let reply = app.get_anon("/openapi.json").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    (reply.text.clone(), reply.json.clone())
}

/// `(METHOD, /api/v1/path/{param})` of every operation the document names.
fn documented(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("path item");
            item.keys()
                .filter(|k| METHODS.iter().any(|m| m.eq_ignore_ascii_case(k)))
                .map(|method| (method.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `(METHOD, /api/v1/path/{param})` of every route API.md names (`GET /payments/:id` …),
/// except `GET /metrics`, which is served on a listener of its own.
fn contract() -> BTreeSet<(String, String)> {
    let api = include_str!("../../docs/API.md");
    let mut routes = BTreeSet::new();
    for method in ["GET", "POST", "DELETE"] {
        let mut rest = api;
        let needle = format!("`{method} /");
        while let Some(at) = rest.find(&needle) {
            let tail = &rest[at + needle.len() - 1..];
            let end = tail.find(['`', ' ', '?']).unwrap_or(tail.len());
            let path = &tail[..end];
            let path = path.strip_prefix("/api/v1").unwrap_or(path);
            let templated: Vec<String> = path
                .split('/')
                .map(|segment| match segment.strip_prefix(':') {
                    Some(name) => format!("{{{name}}}"),
                    None => segment.to_owned(),
                })
                .collect();
            if path != "/metrics" {
                routes.insert((method.to_owned(), format!("/api/v1{}", templated.join("/"))));
            }
            rest = &tail[end..];
        }
    }
    routes
}

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                crate::helpers::random_id()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_served_document_is_the_one_the_repository_keeps() {
    let app = spawn_on(Backend::Memory, &[]).await;
    let (text, document) = served(&app).await;
    assert_eq!(document["openapi"], "3.1.0");
    if std::env::var_os("ATOMIC_BLESS_OPENAPI").is_some() {
        std::fs::write(KEPT, format!("{text}\n")).expect("docs/openapi.json written");
    }
    let kept = std::fs::read_to_string(KEPT).unwrap_or_default();
    assert!(
        kept.trim_end() == text,
        "docs/openapi.json differs from the document the server serves; after checking the \
         change, refresh it with: ATOMIC_BLESS_OPENAPI=1 cargo test -p atomic-e2e --test api \
         openapi::the_served_document"
    );
}

#[tokio::test]
async fn the_document_names_exactly_the_routes_of_the_contract() {
    let app = spawn_on(Backend::Memory, &[]).await;
    let (_, document) = served(&app).await;
    let named = documented(&document);
    let contract = contract();
    let missing: Vec<_> = contract.difference(&named).collect();
    let extra: Vec<_> = named.difference(&contract).collect();
    assert!(
        missing.is_empty(),
        "API.md routes missing from the document: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "document routes API.md does not name: {extra:?}"
    );
}

#[tokio::test]
async fn the_router_serves_exactly_the_operations_the_document_names() {
    let app = spawn_on(Backend::Memory, &[]).await;
    let (_, document) = served(&app).await;
    let named = documented(&document);
    let paths: BTreeSet<&String> = named.iter().map(|(_, path)| path).collect();
    for path in paths {
        let url = format!("{}{}", app.origin, concrete(path));
        for method in METHODS {
            let request = app
                .client
                .request(method.parse().expect("method"), &url)
                .header("content-type", "application/json")
                .body("{}");
            let reply = app.send(request).await;
            let is_named = named.contains(&(method.to_owned(), path.clone()));
            let keyed = document["paths"][path.as_str()][method.to_lowercase()]
                .get("security")
                .is_some();
            // A route the router lacks answers 404 (no key is looked at) or 405; one it has
            // answers 401 without a key when keyed, and success when open.
            let expected: &[u16] = match (is_named, keyed) {
                (false, _) => &[405],
                (true, true) => &[401],
                (true, false) => &[200],
            };
            assert!(
                expected.contains(&reply.status),
                "{method} {path}: {} (documented: {is_named}) {}",
                reply.status,
                reply.text
            );
        }
    }
}
