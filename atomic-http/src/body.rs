//! Reading a JSON request body strictly: at most 65,536 bytes (refused from `Content-Length`
//! before reading, and while streaming when there is none), `application/json` or
//! `application/*+json` in UTF-8 unless the body is empty (read as `{}`), valid JSON with no
//! duplicate keys and no trailing data, and a JSON object at the top. The canonical form
//! (sorted keys, no white space) is kept for idempotency fingerprints.

use std::fmt;

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::ApiError;
use atomic_core::Invalid;

/// The largest body accepted, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A request body that is a JSON object.
#[derive(Debug)]
pub(crate) struct JsonBody {
    /// The object.
    pub(crate) object: Map<String, Value>,
    /// Its canonical bytes (sorted keys, no insignificant white space).
    pub(crate) canonical: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > BODY_LIMIT as u64) {
            return Err(ApiError::PayloadTooLarge);
        }
        if declared.is_some_and(|len| len > 0) && !is_json(&parts.headers) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = match Limited::new(body, BODY_LIMIT).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::PayloadTooLarge);
            }
            Err(_) => return Err(ApiError::InvalidJson("the body could not be read".into())),
        };
        if bytes.is_empty() {
            return Ok(Self {
                object: Map::new(),
                canonical: Bytes::from_static(b"{}"),
            });
        }
        if !is_json(&parts.headers) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let object = match parse_strict(&bytes)? {
            Value::Object(object) => object,
            _ => {
                return Err(ApiError::field(
                    "body",
                    Invalid::new("must be a JSON object"),
                ));
            }
        };
        let mut canonical = Vec::with_capacity(bytes.len());
        write_canonical_object(&object, &mut canonical);
        Ok(Self {
            object,
            canonical: Bytes::from(canonical),
        })
    }
}

/// Writes the canonical form of a value: object keys sorted (by their UTF-8 bytes) at every
/// depth, no white space. Sorted here, explicitly, so it holds however serde_json's map is
/// built (its `preserve_order` feature keeps insertion order).
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(object) => write_canonical_object(object, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        // Scalars have one serialization; writing into a Vec cannot fail.
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn write_canonical_object(object: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut keys: Vec<&String> = object.keys().collect();
    keys.sort_unstable();
    out.push(b'{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        if let Some(value) = object.get(key) {
            write_canonical(value, out);
        }
    }
    out.push(b'}');
}

/// Whether the Content-Type is `application/json` or `application/*+json`, with no charset
/// or `charset=utf-8` (case-insensitive, quoted or not): JSON is read as UTF-8 only, so a body
/// declared in another charset is refused rather than misread.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json") && sub.len() > "+json".len());
    json && parts.all(|parameter| match parameter.split_once('=') {
        Some((name, charset)) if name.trim().eq_ignore_ascii_case("charset") => {
            let charset = charset.trim();
            let charset = charset
                .strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .unwrap_or(charset);
            charset.eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    })
}

/// Parses JSON refusing duplicate object keys and trailing data.
pub(crate) fn parse_strict(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|e| ApiError::InvalidJson(describe(&e)))?;
    Ok(value)
}

fn describe(error: &serde_json::Error) -> String {
    // serde_json's messages name a position, never the input's content.
    error.to_string()
}

/// A JSON value in which every object has distinct keys.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom("duplicate key in a JSON object"));
            }
            let value = map.next_value_seed(Strict)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn strict_parsing() {
        assert!(parse_strict(br#"{"a":1,"b":{"c":[1,2]}}"#).is_ok());
        for bad in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"a":{"b":1,"b":1}}"#,
            br#"{"a":1} x"#,
            br#"{"a":1"#,
            br#"{'a':1}"#,
            br#"{"a":00010}"#,
            br#"{"a":"\ud800"}"#,
            b"\xff",
        ] {
            assert!(
                matches!(parse_strict(bad), Err(ApiError::InvalidJson(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(100_000);
        assert!(
            matches!(parse_strict(deep.as_bytes()), Err(ApiError::InvalidJson(_))),
            "deep nesting is refused, not a stack overflow"
        );
    }

    #[test]
    fn json_content_types() {
        let check = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_json(&h)
        };
        assert!(check("application/json"));
        assert!(check("Application/JSON; charset=utf-8"));
        assert!(check("application/merge-patch+json"));
        assert!(check("application/json; charset=\"UTF-8\""));
        assert!(check("application/json;foo=bar"));
        for other in [
            "application/json; charset=UTF-16",
            "application/json; charset=\"utf-16le\"",
            "application/json;CHARSET=latin1",
            "application/json; charset=utf-8; charset=utf-16",
            "application/json; charset=",
        ] {
            assert!(!check(other), "{other}");
        }
        assert!(!check("application/+json"));
        assert!(!check("text/plain"));
        assert!(!check("application/jsonx"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn canonical_form_ignores_key_order() {
        let a = parse_strict(br#"{"b":1,"a":{"y":2,"x":1}}"#).unwrap();
        let b = parse_strict(br#"{ "a" : {"x":1,"y":2}, "b":1 }"#).unwrap();
        assert_eq!(
            serde_json::to_vec(&a).unwrap(),
            serde_json::to_vec(&b).unwrap()
        );
    }
}
