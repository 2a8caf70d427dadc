//! Rate-limit headers: the IETF `RateLimit-Policy` and `RateLimit` fields, plus the older
//! `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`. `RateLimit-Policy` lists
//! every limiter that applied; the others describe the most constrained one (fewest remaining,
//! then soonest reset). A refusal's `Retry-After` is set here too, from every limiter that
//! applied: the latest reset among the spent ones.

use std::time::Duration;

use atomic_core::rate_limit::{Decision, retry_after};

use crate::error::ApiError;
use axum::http::{HeaderMap, HeaderValue};

/// Whole seconds, rounded up, so a client never retries early.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The decision the headers describe.
pub(crate) fn most_constrained(decisions: &[Decision]) -> Option<&Decision> {
    decisions
        .iter()
        .min_by_key(|d| (u8::from(d.allowed), d.remaining, d.reset))
}

/// The 429 for a request a limiter refused: `Retry-After` is the latest reset of the spent
/// limiters, so a caller that waits it out is not refused by one that was already spent.
pub(crate) fn refusal(decisions: &[Decision], refused: &Decision) -> ApiError {
    ApiError::RateLimited(ceil_secs(retry_after(decisions).unwrap_or(refused.reset)))
}

/// Adds the rate-limit headers for `decisions` (nothing when no limiter applied). A refusal
/// carries its own `Retry-After` ([`refusal`]).
pub(crate) fn apply_headers(headers: &mut HeaderMap, decisions: &[Decision]) {
    let Some(main) = most_constrained(decisions) else {
        return;
    };
    let policy = decisions
        .iter()
        .map(|d| format!("\"{}\";q={};w={}", d.policy, d.limit, d.window.as_secs()))
        .collect::<Vec<_>>()
        .join(", ");
    let reset = ceil_secs(main.reset);
    let current = format!("\"{}\";r={};t={}", main.policy, main.remaining, reset);
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    put("ratelimit-policy", policy);
    put("ratelimit", current);
    put("ratelimit-limit", main.limit.to_string());
    put("ratelimit-remaining", main.remaining.to_string());
    put("ratelimit-reset", reset.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(
        policy: &str,
        allowed: bool,
        limit: u64,
        remaining: u64,
        reset: u64,
        window: u64,
    ) -> Decision {
        Decision {
            policy: policy.into(),
            allowed,
            limit,
            remaining,
            reset: Duration::from_millis(reset),
            window: Duration::from_secs(window),
        }
    }

    #[test]
    fn headers_describe_the_most_constrained_limiter() {
        let mut h = HeaderMap::new();
        apply_headers(
            &mut h,
            &[
                d("global", true, 100, 97, 800_000, 900),
                d("payments", true, 10, 3, 59_500, 60),
            ],
        );
        assert_eq!(
            h["ratelimit-policy"],
            "\"global\";q=100;w=900, \"payments\";q=10;w=60"
        );
        assert_eq!(h["ratelimit"], "\"payments\";r=3;t=60");
        assert_eq!(
            (
                &h["ratelimit-limit"],
                &h["ratelimit-remaining"],
                &h["ratelimit-reset"]
            ),
            (
                &HeaderValue::from(10),
                &HeaderValue::from(3),
                &HeaderValue::from(60)
            )
        );
    }

    #[test]
    fn retry_after_waits_for_every_spent_limiter() {
        let decisions = [
            d("global", true, 100, 0, 20_000, 900),
            d("payments", false, 10, 0, 9_500, 60),
        ];
        let refused = refusal(&decisions, &decisions[1]);
        assert!(matches!(refused, ApiError::RateLimited(20)), "{refused:?}");
        let mut h = HeaderMap::new();
        apply_headers(&mut h, &decisions);
        assert_eq!(h["ratelimit"], "\"payments\";r=0;t=10");
        assert!(!h.contains_key("retry-after"), "the refusal carries it");
    }

    #[test]
    fn ties_go_to_the_sooner_reset_and_refusals_win() {
        let tie = [
            d("global", true, 100, 5, 800_000, 900),
            d("payments", true, 10, 5, 2_000, 60),
        ];
        assert_eq!(most_constrained(&tie).unwrap().policy, "payments");
        let refused = [d("global", false, 100, 0, 800_000, 900)];
        assert_eq!(most_constrained(&refused).unwrap().policy, "global");
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
    }
}
