//! What an endpoint receives: every event type (`["*"]`), or a non-empty list of distinct
//! known types (API.md *Precise rules of v1.1*, Endpoints).

use super::EventType;
use crate::error::Invalid;

/// The event types an endpoint is subscribed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// `["*"]`: every type, including types added later.
    All,
    /// These types (distinct, in the contract's order, at least one).
    Only(Vec<EventType>),
}

impl Subscription {
    /// The subscription written as `events`; anything else API.md refuses is an error.
    pub fn parse<S: AsRef<str>>(events: &[S]) -> Result<Self, Invalid> {
        match events {
            [] => Err(Invalid::new(
                "events must name at least one event type, or be [\"*\"]",
            )),
            [only] if only.as_ref() == "*" => Ok(Self::All),
            _ => {
                let mut types = events
                    .iter()
                    .map(|e| match e.as_ref() {
                        "*" => Err(Invalid::new("\"*\" must be the only entry of events")),
                        name => EventType::parse(name),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                types.sort_unstable();
                let named = types.len();
                types.dedup();
                if types.len() != named {
                    return Err(Invalid::new("events must not repeat a type"));
                }
                Ok(Self::Only(types))
            }
        }
    }

    /// Whether an event of type `event` is sent to the endpoint.
    pub fn includes(&self, event: EventType) -> bool {
        match self {
            Self::All => true,
            Self::Only(types) => types.contains(&event),
        }
    }

    /// The subscription as the API writes it.
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            Self::All => vec!["*"],
            Self::Only(types) => types.iter().map(|t| t.as_str()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_alone_is_everything_and_a_list_is_its_types() {
        let all = Subscription::parse(&["*"]).unwrap();
        assert!(EventType::ALL.into_iter().all(|t| all.includes(t)));
        assert_eq!(all.names(), ["*"]);

        let some = Subscription::parse(&["refund.failed", "payment.succeeded"]).unwrap();
        assert!(some.includes(EventType::PaymentSucceeded));
        assert!(some.includes(EventType::RefundFailed));
        assert!(!some.includes(EventType::PaymentFailed));
        assert_eq!(some.names(), ["payment.succeeded", "refund.failed"]);
    }

    #[test]
    fn empty_repeated_unknown_or_mixed_star_lists_are_refused() {
        let empty: [&str; 0] = [];
        assert!(Subscription::parse(&empty).is_err());
        for bad in [
            &["payment.succeeded", "payment.succeeded"][..],
            &["*", "*"],
            &["*", "payment.failed"],
            &["payment.done"],
            &[""],
        ] {
            assert!(Subscription::parse(bad).is_err(), "{bad:?}");
        }
    }
}
