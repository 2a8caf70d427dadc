//! `X-Request-Id`: the caller's value when it is sane (1..=128 of `[A-Za-z0-9._:-]`), else a
//! new UUIDv7. It is put in the request's extensions for handlers and logs, and echoed on
//! every response.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The header name.
pub const X_REQUEST_ID: &str = "x-request-id";

/// This request's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A new id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn from_header(value: &HeaderValue) -> Option<Self> {
        let text = value.to_str().ok()?;
        let sane = (1..=128).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        sane.then(|| Self(text.to_owned()))
    }
}

/// Middleware: establishes the request id and echoes it.
pub(crate) async fn request_id(mut request: Request, next: Next) -> Response {
    let mut values = request.headers().get_all(X_REQUEST_ID).iter();
    let id = match (values.next(), values.next()) {
        (Some(only), None) => RequestId::from_header(only),
        _ => None,
    }
    .unwrap_or_else(RequestId::generate);
    request.extensions_mut().insert(id.clone());
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        let id = |s: &str| RequestId::from_header(&HeaderValue::from_str(s).unwrap());
        assert_eq!(
            id("abc-123_x.y:z").map(|r| r.0),
            Some("abc-123_x.y:z".to_owned())
        );
        assert!(id("").is_none());
        assert!(id(&"a".repeat(129)).is_none());
        assert!(id("has space").is_none());
        assert!(id("semi;colon").is_none());
        assert!(RequestId::from_header(&HeaderValue::from_bytes(b"\xff").unwrap()).is_none());
    }
}
