//! List query strings: `limit` (1..=100, default 20), `startingAfter` (an id) and, where the
//! list has one, `status`. Unknown or repeated parameters are refused, like unknown fields.

use atomic_core::page::{PageLimit, PageRequest};
use atomic_core::{Invalid, PaymentStatus};
use uuid::Uuid;

use crate::error::ApiError;
use crate::fields::Fields;

/// A parsed list query.
pub(crate) struct ListQuery {
    pub(crate) limit: PageLimit,
    pub(crate) starting_after: Option<Uuid>,
    pub(crate) status: Option<PaymentStatus>,
}

impl ListQuery {
    /// The page request with its cursor typed as `C`.
    pub(crate) fn page<C: From<Uuid>>(&self) -> PageRequest<C> {
        PageRequest {
            limit: self.limit,
            starting_after: self.starting_after.map(C::from),
        }
    }
}

/// Parses `raw` (the query string, if any); `status` is known only when `with_status`.
pub(crate) fn parse(raw: Option<&str>, with_status: bool) -> Result<ListQuery, ApiError> {
    let known: &[&str] = if with_status {
        &["limit", "startingAfter", "status"]
    } else {
        &["limit", "startingAfter"]
    };
    let mut object = serde_json::Map::new();
    let mut repeated = Vec::new();
    for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if object
            .insert(
                name.to_string(),
                serde_json::Value::String(value.into_owned()),
            )
            .is_some()
        {
            repeated.push(name.into_owned());
        }
    }
    let mut fields = Fields::new(&object, known);
    let limit = fields.optional("limit", |v| {
        let text = v.as_str().unwrap_or_default();
        let n: i64 = text
            .parse()
            .map_err(|_| Invalid::new("must be an integer from 1 to 100"))?;
        PageLimit::new(n)
    });
    let starting_after = fields.optional("startingAfter", |v| {
        atomic_core::id::parse_uuid(v.as_str().unwrap_or_default())
    });
    let status = fields.optional("status", |v| {
        PaymentStatus::parse(v.as_str().unwrap_or_default())
    });
    for name in repeated {
        if known.contains(&name.as_str()) {
            fields.fail(
                match name.as_str() {
                    "limit" => "limit",
                    "status" => "status",
                    _ => "startingAfter",
                },
                Invalid::new("must be given at most once"),
            );
        }
    }
    fields.finish()?;
    Ok(ListQuery {
        limit: limit.flatten().unwrap_or_default(),
        starting_after: starting_after.flatten(),
        status: status.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let q = parse(Some("limit=5&status=SUCCESS"), true).unwrap();
        assert_eq!((q.limit.get(), q.status), (5, Some(PaymentStatus::Success)));
        assert_eq!(parse(None, false).unwrap().limit.get(), 20);
        for bad in [
            "limit=0",
            "limit=101",
            "limit=abc",
            "limit=",
            "status=success",
            "startingAfter=x",
            "foo=1",
            "limit=1&limit=2",
            "status=PENDING",
        ] {
            let with_status = !bad.starts_with("status=PENDING");
            assert!(parse(Some(bad), with_status).is_err(), "{bad}");
        }
    }
}
