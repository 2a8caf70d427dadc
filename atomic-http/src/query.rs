//! List query strings. Every list takes `limit` (1..=100, default 20), `startingAfter` (an id)
//! and `createdGte`/`createdLt` (RFC 3339); some take `status`, `type`, `paymentId` and
//! `metadata[<key>]=<value>` filters (exact, ANDed, each key at most once).
//! Unknown, repeated or malformed parameters are refused (400), like unknown fields.

use atomic_core::event::{EventFilter, EventType};
use atomic_core::metadata::MetadataFilter;
use atomic_core::page::{CreatedRange, PageLimit, PageRequest};
use atomic_core::ports::{DeliveryFilter, PaymentFilter, RefundFilter};
use atomic_core::webhook::DeliveryStatus;
use atomic_core::{Invalid, PaymentId, PaymentStatus, RefundStatus, Timestamp};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::error::ApiError;
use crate::fields::Fields;

/// Which list a query is for: it decides the parameters known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum List {
    /// `GET /payments`: `status` (a payment status), created range, metadata.
    Payments,
    /// `GET /refunds`: `paymentId`, `status` (a refund status), created range, metadata.
    Refunds,
    /// `GET /accounts/:id/entries`: created range.
    Entries,
    /// `GET /api-keys`: created range.
    ApiKeys,
    /// `GET /events`: `type` (an event type), created range.
    Events,
    /// `GET /webhook-endpoints`: created range.
    WebhookEndpoints,
    /// `GET /webhook-endpoints/:id/deliveries`: `status` (a delivery status), created range.
    Deliveries,
}

impl List {
    fn known(self) -> &'static [&'static str] {
        match self {
            List::Payments => &[
                "limit",
                "startingAfter",
                "createdGte",
                "createdLt",
                "status",
            ],
            List::Refunds => &[
                "limit",
                "startingAfter",
                "createdGte",
                "createdLt",
                "status",
                "paymentId",
            ],
            List::Events => &["limit", "startingAfter", "createdGte", "createdLt", "type"],
            List::Deliveries => &[
                "limit",
                "startingAfter",
                "createdGte",
                "createdLt",
                "status",
            ],
            List::Entries | List::ApiKeys | List::WebhookEndpoints => {
                &["limit", "startingAfter", "createdGte", "createdLt"]
            }
        }
    }

    fn takes_metadata(self) -> bool {
        matches!(self, List::Payments | List::Refunds)
    }
}

/// A parsed list query.
#[derive(Debug)]
pub(crate) struct ListQuery {
    pub(crate) limit: PageLimit,
    pub(crate) starting_after: Option<Uuid>,
    pub(crate) created: CreatedRange,
    pub(crate) metadata: MetadataFilter,
    payment_status: Option<PaymentStatus>,
    refund_status: Option<RefundStatus>,
    payment_id: Option<PaymentId>,
    event_type: Option<EventType>,
    delivery_status: Option<DeliveryStatus>,
}

impl ListQuery {
    /// The page request with its cursor typed as `C`.
    pub(crate) fn page<C: From<Uuid>>(&self) -> PageRequest<C> {
        PageRequest {
            limit: self.limit,
            starting_after: self.starting_after.map(C::from),
        }
    }

    /// The filter of `GET /payments`.
    pub(crate) fn payment_filter(&self) -> PaymentFilter {
        PaymentFilter {
            status: self.payment_status,
            created: self.created,
            metadata: self.metadata.clone(),
        }
    }

    /// The filter of `GET /refunds`.
    pub(crate) fn refund_filter(&self) -> RefundFilter {
        RefundFilter {
            payment: self.payment_id,
            status: self.refund_status,
            created: self.created,
            metadata: self.metadata.clone(),
        }
    }

    /// The filter of `GET /events`.
    pub(crate) fn event_filter(&self) -> EventFilter {
        EventFilter {
            event_type: self.event_type,
            created: self.created,
        }
    }

    /// The filter of `GET /webhook-endpoints/:id/deliveries`.
    pub(crate) fn delivery_filter(&self) -> DeliveryFilter {
        DeliveryFilter {
            status: self.delivery_status,
            created: self.created,
        }
    }
}

/// The query string split into plain parameters (each at most once) and `metadata[...]`
/// filters, with every problem found on the way.
#[derive(Default)]
struct Split {
    plain: Map<String, Value>,
    repeated: Vec<String>,
    metadata: Vec<(String, String)>,
    malformed_metadata: bool,
}

fn split(raw: &str, list: List) -> Split {
    let mut out = Split::default();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        if list.takes_metadata() && name.starts_with("metadata") {
            match metadata_key(&name) {
                Some(key) if !out.metadata.iter().any(|(k, _)| k == key) => {
                    out.metadata.push((key.to_owned(), value.into_owned()));
                }
                // A key given twice, or a name that is not `metadata[<key>]`.
                _ => out.malformed_metadata = true,
            }
            continue;
        }
        let value = Value::String(value.into_owned());
        if out.plain.insert(name.to_string(), value).is_some() {
            out.repeated.push(name.into_owned());
        }
    }
    out
}

/// `<key>` of a parameter named `metadata[<key>]` (the key itself is validated later).
fn metadata_key(name: &str) -> Option<&str> {
    name.strip_prefix("metadata[")?.strip_suffix(']')
}

/// Parses `raw` (the query string, if any) for `list`.
pub(crate) fn parse(raw: Option<&str>, list: List) -> Result<ListQuery, ApiError> {
    let known = list.known();
    let split = split(raw.unwrap_or(""), list);
    let mut fields = Fields::new(&split.plain, known);
    let mut query = read(&mut fields, list);
    for name in &split.repeated {
        if let Some(known) = known.iter().find(|k| *k == name) {
            fields.fail(known, Invalid::new("must be given at most once"));
        }
    }
    query.metadata =
        metadata_filter(&mut fields, split.malformed_metadata, split.metadata).unwrap_or_default();
    fields.finish()?;
    Ok(query)
}

/// The plain parameters `list` knows, each read from `fields`; a refused one is recorded in
/// `fields` and read as absent. The metadata filter is left empty.
fn read(fields: &mut Fields<'_>, list: List) -> ListQuery {
    let takes = |name: &str| list.known().contains(&name);
    ListQuery {
        limit: param(fields, "limit", |text| {
            let n: i64 = text
                .parse()
                .map_err(|_| Invalid::new("must be an integer from 1 to 100"))?;
            PageLimit::new(n)
        })
        .unwrap_or_default(),
        starting_after: param(fields, "startingAfter", atomic_core::id::parse_uuid),
        created: CreatedRange {
            gte: takes("createdGte")
                .then(|| param(fields, "createdGte", created_bound))
                .flatten(),
            lt: takes("createdLt")
                .then(|| param(fields, "createdLt", created_bound))
                .flatten(),
        },
        metadata: MetadataFilter::default(),
        payment_status: (list == List::Payments)
            .then(|| param(fields, "status", PaymentStatus::parse))
            .flatten(),
        refund_status: (list == List::Refunds)
            .then(|| param(fields, "status", RefundStatus::parse))
            .flatten(),
        delivery_status: (list == List::Deliveries)
            .then(|| param(fields, "status", DeliveryStatus::parse))
            .flatten(),
        event_type: takes("type")
            .then(|| param(fields, "type", EventType::parse))
            .flatten(),
        payment_id: takes("paymentId")
            .then(|| param(fields, "paymentId", |text| text.parse::<PaymentId>()))
            .flatten(),
    }
}

/// One query parameter parsed from its text; `None` when absent or refused (the refusal is
/// recorded in `fields`).
fn param<T>(
    fields: &mut Fields<'_>,
    name: &'static str,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> Option<T> {
    fields
        .optional(name, |value| parse(value.as_str().unwrap_or_default()))
        .flatten()
}

/// The `metadata[<key>]=<value>` filters, or `None` when they are refused (recorded in
/// `fields`).
fn metadata_filter(
    fields: &mut Fields<'_>,
    malformed: bool,
    pairs: Vec<(String, String)>,
) -> Option<MetadataFilter> {
    if malformed {
        fields.fail(
            "metadata",
            Invalid::new("filters are metadata[<key>]=<value>, each key at most once"),
        );
        return None;
    }
    MetadataFilter::new(pairs)
        .map_err(|invalid| fields.fail("metadata", invalid))
        .ok()
}

/// An RFC 3339 date-time as a bound of a creation range. Records are stamped to the
/// microsecond, so a bound finer than that is rounded up: "at or after" and "before" a
/// sub-microsecond instant then keep exactly the records they would keep unrounded.
fn created_bound(text: &str) -> Result<Timestamp, Invalid> {
    const FORM: &str = "must be an RFC 3339 date-time such as 2026-12-01T00:00:00Z \
                        (in a query string, write '+' as %2B)";
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| Invalid::new(FORM))?;
    let below_micro = at.nanosecond() % 1_000;
    let at = if below_micro == 0 {
        at
    } else {
        at.checked_add(time::Duration::nanoseconds(i64::from(1_000 - below_micro)))
            .ok_or(Invalid::new(FORM))?
    };
    Ok(Timestamp::from_datetime(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let q = parse(Some("limit=5&status=SUCCESS"), List::Payments).unwrap();
        assert_eq!(
            (q.limit.get(), q.payment_filter().status),
            (5, Some(PaymentStatus::Success))
        );
        assert_eq!(parse(None, List::Entries).unwrap().limit.get(), 20);
        for bad in [
            "limit=0",
            "limit=101",
            "limit=abc",
            "limit=",
            "status=success",
            "startingAfter=x",
            "foo=1",
            "limit=1&limit=2",
        ] {
            assert!(parse(Some(bad), List::Payments).is_err(), "{bad}");
        }
        for bad in ["status=SUCCESS", "paymentId=x", "metadata[a]=1"] {
            assert!(parse(Some(bad), List::ApiKeys).is_err(), "{bad}");
        }
        // Every list takes a created range (API.md), keys included.
        assert!(parse(Some("createdGte=2026-01-01T00:00:00Z"), List::ApiKeys).is_ok());
        assert!(parse(Some("status=SUCCESS"), List::Entries).is_err());
        assert!(parse(Some("metadata[a]=1"), List::Entries).is_err());
    }

    #[test]
    fn refund_lists_take_their_own_statuses_and_a_payment() {
        let id = Uuid::now_v7();
        let q = parse(
            Some(&format!("status=FAILED&paymentId={id}")),
            List::Refunds,
        )
        .unwrap();
        let filter = q.refund_filter();
        assert_eq!(filter.status, Some(RefundStatus::Failed));
        assert_eq!(filter.payment, Some(PaymentId::from(id)));
        for bad in ["status=AUTHORIZED", "paymentId=nope", "paymentId="] {
            assert!(parse(Some(bad), List::Refunds).is_err(), "{bad}");
        }
        assert!(parse(Some(&format!("paymentId={id}")), List::Payments).is_err());
    }

    #[test]
    fn event_and_delivery_lists_take_their_own_filters() {
        let q = parse(Some("type=refund.failed&limit=3"), List::Events).unwrap();
        assert_eq!(q.event_filter().event_type, Some(EventType::RefundFailed));
        assert_eq!(q.limit.get(), 3);
        assert_eq!(
            parse(None, List::Events).unwrap().event_filter().event_type,
            None
        );
        for bad in [
            "type=payment.done",
            "type=*",
            "type=",
            "type=PAYMENT.SUCCEEDED",
            "type=payment.failed&type=refund.failed",
            "status=SUCCESS",
            "metadata[a]=1",
        ] {
            assert!(parse(Some(bad), List::Events).is_err(), "{bad}");
        }
        let q = parse(Some("status=DELIVERED"), List::Deliveries).unwrap();
        assert_eq!(q.delivery_filter().status, Some(DeliveryStatus::Delivered));
        for bad in ["status=SUCCESS", "status=delivered", "type=refund.failed"] {
            assert!(parse(Some(bad), List::Deliveries).is_err(), "{bad}");
        }
        assert!(
            parse(
                Some("createdLt=2026-12-01T00:00:00Z"),
                List::WebhookEndpoints
            )
            .is_ok()
        );
        for bad in ["status=PENDING", "type=refund.failed", "metadata[a]=1"] {
            assert!(parse(Some(bad), List::WebhookEndpoints).is_err(), "{bad}");
        }
    }

    #[test]
    fn created_bounds_are_rfc3339_rounded_up_to_the_microsecond() {
        let q = parse(
            Some("createdGte=2026-12-01T00:00:00.0000001Z&createdLt=2026-12-01T01:00:00%2B01:00"),
            List::Entries,
        )
        .unwrap();
        assert_eq!(
            q.created.gte.map(|t| t.to_string()).as_deref(),
            Some("2026-12-01T00:00:00.000001Z")
        );
        assert_eq!(
            q.created.lt.map(|t| t.to_string()).as_deref(),
            Some("2026-12-01T00:00:00.000000Z")
        );
        for bad in [
            "createdGte=2026-12-01",
            "createdGte=2026-12-01T00:00:00",
            "createdGte=2026-12-01T00:00:00+00:00",
            "createdLt=yesterday",
            "createdLt=1764547200",
            "createdGte=",
            "createdGte=2026-12-01T00:00:00Z&createdGte=2026-12-02T00:00:00Z",
        ] {
            assert!(parse(Some(bad), List::Refunds).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_filters_are_exact_keys_once_each() {
        let q = parse(
            Some("metadata[orderId]=A%2B1&metadata%5Bshop%5D=&limit=3"),
            List::Payments,
        )
        .unwrap();
        let pairs: Vec<_> = q
            .metadata
            .pairs()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("orderId".to_owned(), "A+1".to_owned()),
                ("shop".to_owned(), String::new())
            ]
        );
        for bad in [
            "metadata[a]=1&metadata[a]=1",
            "metadata[a]=1&metadata[a]=2",
            "metadata=1",
            "metadata[]=1",
            "metadata[a=1",
            "metadata[a][b]=1",
            "metadata[a]b=1",
            "metadata[a%20b]=1",
            "metadata[a]=x%00y",
            "metadataX=1",
        ] {
            assert!(parse(Some(bad), List::Refunds).is_err(), "{bad}");
        }
        let long_key = format!("metadata[{}]=1", "k".repeat(41));
        assert!(parse(Some(&long_key), List::Payments).is_err());
        let long_value = format!("metadata[k]={}", "v".repeat(501));
        assert!(parse(Some(&long_value), List::Payments).is_err());
        let many: Vec<String> = (0..21).map(|i| format!("metadata[k{i}]=v")).collect();
        assert!(parse(Some(&many.join("&")), List::Payments).is_err());
        assert!(parse(Some(&many[..20].join("&")), List::Payments).is_ok());
    }
}
