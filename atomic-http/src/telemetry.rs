//! Request metrics, through the `metrics` facade (names in [`atomic_core::telemetry::names`]):
//! every answered request counts in `atomic_http_requests_total{method,route,status}` and its
//! time in `atomic_http_request_duration_seconds{method,route}`; a rate-limit refusal counts
//! in `atomic_rate_limited_total{policy}`. The route is the matched template
//! (`/api/v1/payments/{id}`), never the raw path, and a request no route matched is
//! `unmatched`, so a client cannot mint series. The middleware sits outside the timeout and
//! the panic catcher, so it sees the status the client gets.

use std::sync::Arc;
use std::time::Instant;

use atomic_core::telemetry::names;
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{SharedString, counter, histogram};

/// Middleware: counts and times every request.
pub(crate) async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    // Shared, so the two series below take it without copying the text again.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(SharedString::const_str("unmatched"), |path| {
            SharedString::from_shared(Arc::from(path.as_str()))
        });
    let response = next.run(request).await;
    let status = status_label(response.status().as_u16());
    counter!(
        names::HTTP_REQUESTS,
        "method" => method,
        "route" => route.clone(),
        "status" => status
    )
    .increment(1);
    histogram!(names::HTTP_REQUEST_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A request a rate limiter refused, by the policy that refused it.
pub(crate) fn rate_limited(policy: &str) {
    counter!(names::RATE_LIMITED, "policy" => policy.to_owned()).increment(1);
}

/// The method as a label: the standard ones by name, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The status as a label; the statuses this API answers need no allocation.
fn status_label(code: u16) -> SharedString {
    let known = match code {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        431 => "431",
        500 => "500",
        503 => "503",
        other => return SharedString::from(other.to_string()),
    };
    SharedString::const_str(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_exact() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        for code in [200u16, 202, 404, 429, 503, 299, 418] {
            assert_eq!(&*status_label(code), code.to_string());
        }
    }
}
