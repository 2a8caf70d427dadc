//! The gate in front of every protected route, in the order API.md fixes: establish the
//! caller (a valid key's merchant or the platform, else the client IP), count the request
//! against the rate limiters (global, then payments), and only then refuse a request without
//! a valid key (401). So floods of bad keys are limited per IP, and minting more keys buys a
//! merchant no extra quota.

use std::net::{IpAddr, SocketAddr};

use atomic_core::Principal;
use atomic_core::rate_limit::{Decision, Hit};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;
use crate::rate_limit::{apply_headers, refusal};

/// The authenticated caller of a request (put there by the gate).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caller(pub(crate) Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .copied()
            .ok_or(ApiError::Unauthorized)
    }
}

/// What the `Authorization` header says.
enum Credentials {
    Missing,
    Duplicated,
    Malformed,
    Bearer(String),
}

fn credentials(headers: &HeaderMap) -> Credentials {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Credentials::Missing,
        (Some(_), Some(_)) => return Credentials::Duplicated,
        (Some(value), None) => value,
    };
    let Ok(text) = value.to_str() else {
        return Credentials::Malformed;
    };
    match text.split_once(' ') {
        Some((scheme, key))
            if scheme.eq_ignore_ascii_case("bearer")
                && !key.trim().is_empty()
                && !key.trim().contains(char::is_whitespace) =>
        {
            Credentials::Bearer(key.trim().to_owned())
        }
        _ => Credentials::Malformed,
    }
}

/// The client address a limiter counts: the socket peer, or, behind `hops` trusted proxies,
/// the `hops`-th `X-Forwarded-For` entry from the right. IPv6 clients count per /64, the
/// block one subscriber usually holds, so rotating addresses inside it buys nothing.
fn client_ip(request: &Request, trusted_hops: usize) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded = (trusted_hops > 0)
        .then(|| {
            let chain: Vec<IpAddr> = request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|part| part.trim().parse().ok())
                .collect();
            chain
                .iter()
                .rev()
                .nth(trusted_hops - 1)
                .or(chain.first())
                .copied()
        })
        .flatten();
    forwarded.or(peer)
}

fn ip_identity(ip: Option<IpAddr>) -> String {
    match ip {
        Some(IpAddr::V4(v4)) => format!("ip:{v4}"),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        None => "ip:unknown".to_owned(),
    }
}

/// Middleware: caller, rate limits, then authentication.
pub(crate) async fn gate(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let credentials = credentials(request.headers());
    let fresh = manages_keys(request.method(), request.uri().path());
    let principal = match authenticate(&app, &credentials, fresh).await {
        Ok(principal) => principal,
        Err(refused) => return refused,
    };
    let identity = match principal {
        Some(Principal::Platform) => "platform".to_owned(),
        Some(Principal::Merchant(id)) => format!("merchant:{id}"),
        None => ip_identity(client_ip(&request, app.config().trusted_proxy_hops)),
    };
    let hits = hits_for(&app, request.method(), request.uri().path(), &identity);
    let decisions = match limit(&app, &hits).await {
        Ok(decisions) => decisions,
        Err(refused) => return refused,
    };
    let mut response = if let Some(refused) = decisions.iter().find(|d| !d.allowed) {
        crate::telemetry::rate_limited(&refused.policy);
        refusal(&decisions, refused).into_response()
    } else {
        match (credentials, principal) {
            (Credentials::Duplicated, _) => ApiError::field(
                "Authorization",
                atomic_core::Invalid::new("must be sent at most once"),
            )
            .into_response(),
            (_, None) => ApiError::Unauthorized.into_response(),
            (_, Some(principal)) => {
                request.extensions_mut().insert(Caller(principal));
                next.run(request).await
            }
        }
    };
    apply_headers(response.headers_mut(), &decisions);
    response
}

/// The principal a bearer key names (`None` without one, or for an unknown key); `fresh`
/// (key management) checks the key store itself, never the cache. A store failure is the
/// answer.
async fn authenticate(
    app: &AppState,
    credentials: &Credentials,
    fresh: bool,
) -> Result<Option<Principal>, Response> {
    let Credentials::Bearer(key) = credentials else {
        return Ok(None);
    };
    let keys = &app.services().api_keys;
    let checked = if fresh {
        keys.authenticate_fresh(key).await
    } else {
        keys.authenticate(key).await
    };
    checked.map_err(|error| ApiError::from(error).into_response())
}

/// The limiters' decisions on `hits`. An unreachable limiter refuses with 503 when
/// `rate_limit_fail_closed`, else lets the request through unlimited (and is counted).
async fn limit(app: &AppState, hits: &[Hit]) -> Result<Vec<Decision>, Response> {
    if hits.is_empty() {
        return Ok(Vec::new());
    }
    match app.services().ports().limiter.hit(hits).await {
        Ok(decisions) => Ok(decisions),
        Err(error) if app.config().rate_limit_fail_closed => {
            tracing::warn!(?error, "rate limiter unreachable; failing closed");
            Err(ApiError::Unavailable.into_response())
        }
        Err(error) => {
            let failures = app.record_limiter_failure();
            tracing::warn!(?error, failures, "rate limiter unreachable; failing open");
            Ok(Vec::new())
        }
    }
}

/// Key management (API.md): minting and revoking keys, onboarding a merchant (which mints
/// one), and every webhook endpoint route (an endpoint receives its owner's events, signed
/// with a secret shown once). These never trust a cached key.
fn manages_keys(method: &Method, path: &str) -> bool {
    const ENDPOINTS: &str = "/api/v1/webhook-endpoints";
    let webhooks = path
        .strip_prefix(ENDPOINTS)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    webhooks
        || match *method {
            Method::POST => path == "/api/v1/api-keys" || path == "/api/v1/merchants",
            Method::DELETE => path.starts_with("/api/v1/api-keys/"),
            _ => false,
        }
}

fn hits_for(app: &AppState, method: &Method, path: &str, identity: &str) -> Vec<Hit> {
    let config = app.config();
    let mut hits = Vec::with_capacity(2);
    if let Some(global) = &config.global_limit {
        hits.push(global.hit(identity));
    }
    if method == Method::POST
        && path == "/api/v1/payments"
        && let Some(payments) = &config.payments_limit
    {
        hits.push(payments.hit(identity));
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::HeaderValue;

    fn with_headers(pairs: &[(&'static str, &str)], peer: Option<&str>) -> Request {
        let mut request = Request::new(Body::empty());
        for (k, v) in pairs {
            request
                .headers_mut()
                .append(*k, HeaderValue::from_str(v).unwrap());
        }
        if let Some(peer) = peer {
            request
                .extensions_mut()
                .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        }
        request
    }

    #[test]
    fn authorization_parsing() {
        let creds = |v: &[&str]| {
            let pairs: Vec<_> = v.iter().map(|v| ("authorization", *v)).collect();
            credentials(with_headers(&pairs, None).headers())
        };
        assert!(matches!(creds(&["Bearer sk_test_x"]), Credentials::Bearer(k) if k == "sk_test_x"));
        assert!(matches!(
            creds(&["bearer sk_test_x"]),
            Credentials::Bearer(_)
        ));
        assert!(matches!(creds(&[]), Credentials::Missing));
        assert!(matches!(
            creds(&["Bearer a", "Bearer b"]),
            Credentials::Duplicated
        ));
        for bad in ["Basic abc", "Bearer", "Bearer ", "Bearer a b", "sk_test_x"] {
            assert!(matches!(creds(&[bad]), Credentials::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn key_management_and_webhook_endpoints_never_trust_a_cached_key() {
        let id = "0190a000-0000-7000-8000-000000000000";
        for (method, path) in [
            (Method::POST, "/api/v1/api-keys".to_owned()),
            (Method::DELETE, format!("/api/v1/api-keys/{id}")),
            (Method::POST, "/api/v1/merchants".to_owned()),
            (Method::POST, "/api/v1/webhook-endpoints".to_owned()),
            (Method::GET, "/api/v1/webhook-endpoints".to_owned()),
            (Method::GET, format!("/api/v1/webhook-endpoints/{id}")),
            (Method::DELETE, format!("/api/v1/webhook-endpoints/{id}")),
            (
                Method::GET,
                format!("/api/v1/webhook-endpoints/{id}/deliveries"),
            ),
            (
                Method::POST,
                format!("/api/v1/webhook-endpoints/{id}/deliveries/{id}/retry"),
            ),
        ] {
            assert!(manages_keys(&method, &path), "{method} {path}");
        }
        for (method, path) in [
            (Method::GET, "/api/v1/api-keys".to_owned()),
            (Method::POST, "/api/v1/payments".to_owned()),
            (Method::GET, "/api/v1/events".to_owned()),
            (Method::GET, format!("/api/v1/events/{id}")),
            (Method::GET, "/api/v1/webhook-endpointsx".to_owned()),
        ] {
            assert!(!manages_keys(&method, &path), "{method} {path}");
        }
    }

    #[test]
    fn forwarded_for_is_read_only_behind_trusted_proxies() {
        let r = with_headers(
            &[("x-forwarded-for", "6.6.6.6, 1.2.3.4")],
            Some("10.0.0.1:5000"),
        );
        assert_eq!(ip_identity(client_ip(&r, 0)), "ip:10.0.0.1");
        assert_eq!(ip_identity(client_ip(&r, 1)), "ip:1.2.3.4");
        assert_eq!(ip_identity(client_ip(&r, 2)), "ip:6.6.6.6");
        assert_eq!(ip_identity(client_ip(&r, 5)), "ip:6.6.6.6");
        let r = with_headers(&[("x-forwarded-for", "garbage")], Some("10.0.0.1:5000"));
        assert_eq!(ip_identity(client_ip(&r, 1)), "ip:10.0.0.1");
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a = with_headers(&[], Some("[2001:db8:1:2:aaaa::1]:1"));
        let b = with_headers(&[], Some("[2001:db8:1:2:bbbb::9]:1"));
        let c = with_headers(&[], Some("[2001:db8:1:3::1]:1"));
        assert_eq!(ip_identity(client_ip(&a, 0)), ip_identity(client_ip(&b, 0)));
        assert_ne!(ip_identity(client_ip(&a, 0)), ip_identity(client_ip(&c, 0)));
        let mapped = with_headers(&[], Some("[::ffff:1.2.3.4]:1"));
        assert_eq!(ip_identity(client_ip(&mapped, 0)), "ip:1.2.3.4");
    }
}
