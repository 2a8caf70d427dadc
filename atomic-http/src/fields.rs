//! Field-by-field validation of a JSON object, collecting every problem so the caller learns
//! all of them at once (`details`). Unknown fields are refused, so a typo never passes
//! silently, and `null` counts as absent for optional fields.

use std::borrow::Cow;

use atomic_core::error::FieldError;
use atomic_core::{Invalid, Metadata};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A validator over one object.
pub(crate) struct Fields<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    /// Starts validating `object`, refusing every field not in `known`.
    pub(crate) fn new(object: &'a Map<String, Value>, known: &[&str]) -> Self {
        let errors = object
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| FieldError::new(Cow::Owned(k.clone()), Invalid::new("is not a known field")))
            .collect();
        Self { object, errors }
    }

    /// A field that must be present.
    pub(crate) fn required<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&Value) -> Result<T, Invalid>,
    ) -> Option<T> {
        match self.object.get(name) {
            None | Some(Value::Null) => {
                self.errors
                    .push(FieldError::new(name, Invalid::new("is required")));
                None
            }
            Some(value) => self.check(name, parse(value)),
        }
    }

    /// A field that may be absent or `null`.
    pub(crate) fn optional<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&Value) -> Result<T, Invalid>,
    ) -> Option<Option<T>> {
        match self.object.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(value) => self.check(name, parse(value)).map(Some),
        }
    }

    /// A field that may be absent, but is never `null`: `null` is given to `parse` like any
    /// other value (for fields where `null` would hide a client's mistake, such as
    /// `metadata: null`).
    pub(crate) fn optional_not_null<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&Value) -> Result<T, Invalid>,
    ) -> Option<Option<T>> {
        match self.object.get(name) {
            None => Some(None),
            Some(value) => self.check(name, parse(value)).map(Some),
        }
    }

    fn check<T>(&mut self, name: &'static str, result: Result<T, Invalid>) -> Option<T> {
        result
            .map_err(|invalid| self.errors.push(FieldError::new(name, invalid)))
            .ok()
    }

    /// Adds a problem found outside the field parsers.
    pub(crate) fn fail(&mut self, name: &'static str, invalid: Invalid) {
        self.errors.push(FieldError::new(name, invalid));
    }

    /// `Ok` when nothing was refused.
    pub(crate) fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// A JSON string.
pub(crate) fn string(value: &Value) -> Result<&str, Invalid> {
    value.as_str().ok_or(Invalid::new("must be a string"))
}

/// A JSON integer that fits `i64` (no fractions, no exponents, no strings).
pub(crate) fn integer(value: &Value) -> Result<i64, Invalid> {
    match value {
        Value::Number(n) if n.is_i64() => n.as_i64().ok_or(Invalid::new("must be an integer")),
        Value::Number(n) if n.is_u64() => Err(Invalid::new("is too large")),
        Value::Number(_) => Err(Invalid::new(
            "must be a whole number of minor units (no fraction, no exponent)",
        )),
        Value::String(_) => Err(Invalid::new("must be a number, not a string")),
        _ => Err(Invalid::new("must be an integer")),
    }
}

/// A metadata object: at most 20 keys of 1..=40 `[A-Za-z0-9_.-]`, each value a string of at
/// most 500 characters without NUL. `null`, nested objects, arrays and numbers are refused.
pub(crate) fn metadata(value: &Value) -> Result<Metadata, Invalid> {
    let Value::Object(object) = value else {
        return Err(Invalid::new("must be an object of string values"));
    };
    if object.len() > atomic_core::metadata::MAX_KEYS {
        return Err(Invalid::new("must have at most 20 keys"));
    }
    let pairs = object
        .iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key.clone(), text.clone())),
            _ => Err(Invalid::new("values must be strings")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Metadata::new(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collects_every_problem() {
        let body = json!({"amount": "10", "typo": 1, "description": null});
        let object = body.as_object().unwrap();
        let mut f = Fields::new(object, &["amount", "currency", "description"]);
        assert_eq!(f.required("amount", integer), None);
        assert_eq!(
            f.required("currency", |v| string(v).map(str::to_owned)),
            None
        );
        assert_eq!(
            f.optional("description", |v| string(v).map(str::to_owned)),
            Some(None)
        );
        let Err(ApiError::Validation(errors)) = f.finish() else {
            panic!()
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_ref()).collect();
        assert_eq!(fields, vec!["typo", "amount", "currency"]);
    }

    #[test]
    fn metadata_within_bounds_only() {
        let ok = metadata(&json!({"orderId": "A-1", "empty": ""})).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(metadata(&json!({})).unwrap().is_empty());
        let many: Map<String, Value> = (0..21).map(|i| (format!("k{i}"), json!("v"))).collect();
        for bad in [
            json!(null),
            json!([]),
            json!("x"),
            json!({"a": {"b": "c"}}),
            json!({"a": ["b"]}),
            json!({"a": 1}),
            json!({"a": null}),
            json!({"a": true}),
            json!({"a": "x\u{0}y"}),
            json!({"bad key": "x"}),
            json!({"": "x"}),
            Value::Object(many),
        ] {
            assert!(metadata(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn null_is_a_value_where_it_must_be() {
        let body = json!({"metadata": null});
        let mut f = Fields::new(body.as_object().unwrap(), &["metadata", "other"]);
        assert_eq!(
            f.optional_not_null("metadata", metadata)
                .map(|m| m.is_some()),
            None
        );
        assert_eq!(
            f.optional_not_null("other", metadata).map(|m| m.is_some()),
            Some(false)
        );
        assert!(f.finish().is_err());
    }

    #[test]
    fn integers_only() {
        assert_eq!(integer(&json!(5)), Ok(5));
        assert_eq!(integer(&json!(-5)), Ok(-5));
        for bad in [
            json!(10.5),
            json!(1e3),
            json!("10"),
            json!(null),
            json!(true),
            json!(u64::MAX),
        ] {
            assert!(integer(&bad).is_err(), "{bad}");
        }
    }
}
