//! Fixed-window rate limiting: what a policy is (`100/15m`), what one check asks ([`Hit`]) and
//! what it answers ([`Decision`]). Windows are aligned to the limiter's clock (multiples of the
//! window since the Unix epoch), so servers sharing a limiter share windows.

use std::fmt;
use std::time::Duration;

use crate::error::Invalid;
use crate::time::parse_duration;

/// A named limit: at most `limit` requests per `window`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// The policy name in headers (`global`, `payments`).
    pub name: String,
    /// Requests allowed per window.
    pub limit: u64,
    /// Window length (whole seconds).
    pub window: Duration,
}

impl RateLimitPolicy {
    /// Parses `LIMIT/WINDOW` (`100/15m`, `10/60`), or `off` for no limit (`None`).
    pub fn parse(name: &str, spec: &str) -> Result<Option<Self>, Invalid> {
        let spec = spec.trim();
        if spec.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (limit, window) = spec
            .split_once('/')
            .ok_or(Invalid::new("must be LIMIT/WINDOW (e.g. 100/15m) or off"))?;
        let limit: u64 = limit
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(Invalid::new("limit must be a positive integer"))?;
        let window = parse_duration(window)?;
        if window.subsec_nanos() != 0 {
            // Windows are numbered and reported (`X-RateLimit-Reset`) in whole seconds.
            return Err(Invalid::new("window must be whole seconds"));
        }
        Ok(Some(Self {
            name: name.to_owned(),
            limit,
            window,
        }))
    }

    /// The check of this policy for one caller.
    pub fn hit(&self, identity: &str) -> Hit {
        Hit {
            policy: self.name.clone(),
            identity: identity.to_owned(),
            limit: self.limit,
            window: self.window,
        }
    }
}

impl fmt::Display for RateLimitPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.limit, self.window.as_secs())
    }
}

/// One counter to increment: policy, caller identity, limit and window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Policy name.
    pub policy: String,
    /// Who is counted (`merchant:<id>`, `platform`, `ip:<addr>`).
    pub identity: String,
    /// Requests allowed per window.
    pub limit: u64,
    /// Window length.
    pub window: Duration,
}

/// The answer for one [`Hit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Policy name.
    pub policy: String,
    /// Whether this request is within the limit.
    pub allowed: bool,
    /// Requests allowed per window.
    pub limit: u64,
    /// Requests left in this window after this one.
    pub remaining: u64,
    /// Time until the window resets.
    pub reset: Duration,
    /// Window length.
    pub window: Duration,
}

impl Decision {
    /// The decision for the `count`-th request of a window, `into_window` after it began.
    pub fn from_count(hit: &Hit, count: u64, into_window: Duration) -> Self {
        Self {
            policy: hit.policy.clone(),
            allowed: count <= hit.limit,
            limit: hit.limit,
            remaining: hit.limit.saturating_sub(count),
            reset: hit.window.saturating_sub(into_window),
            window: hit.window,
        }
    }
}

/// How long a refused caller should wait (`Retry-After`): the latest reset among the spent
/// limiters (those with no request left in their window), not only the one that refused, so a
/// caller that waits this long is not refused again by a limiter that was already spent.
/// `None` when every limiter allowed the request.
pub fn retry_after(decisions: &[Decision]) -> Option<Duration> {
    if decisions.iter().all(|d| d.allowed) {
        return None;
    }
    decisions
        .iter()
        .filter(|d| d.remaining == 0)
        .map(|d| d.reset)
        .max()
}

/// Which window an instant falls in, and how far into it: `(index, elapsed)`.
pub fn window_of(unix_micros: i64, window: Duration) -> (i64, Duration) {
    let len = i64::try_from(window.as_micros()).unwrap_or(i64::MAX).max(1);
    let index = unix_micros.div_euclid(len);
    let elapsed = unix_micros.rem_euclid(len);
    (
        index,
        Duration::from_micros(u64::try_from(elapsed).unwrap_or(0)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_policies() {
        let p = RateLimitPolicy::parse("global", "100/15m")
            .unwrap()
            .unwrap();
        assert_eq!((p.limit, p.window), (100, Duration::from_secs(900)));
        assert_eq!(RateLimitPolicy::parse("x", "OFF"), Ok(None));
        for bad in [
            "100",
            "0/1m",
            "-1/1m",
            "a/1m",
            "10/0",
            "10/1x",
            "10/1500ms",
            "",
        ] {
            assert!(RateLimitPolicy::parse("x", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        let minute = Duration::from_secs(60);
        assert_eq!(window_of(0, minute), (0, Duration::ZERO));
        assert_eq!(window_of(61_000_000, minute), (1, Duration::from_secs(1)));
        assert_eq!(window_of(119_999_999, minute).0, 1);
        assert_eq!(window_of(120_000_000, minute).0, 2);
    }

    #[test]
    fn decisions_count_down_and_refuse_past_the_limit() {
        let hit = RateLimitPolicy::parse("p", "2/1m")
            .unwrap()
            .unwrap()
            .hit("ip:1");
        let d = |n| Decision::from_count(&hit, n, Duration::from_secs(20));
        assert!(d(1).allowed && d(1).remaining == 1);
        assert!(d(2).allowed && d(2).remaining == 0);
        assert!(!d(3).allowed && d(3).remaining == 0);
        assert_eq!(d(3).reset, Duration::from_secs(40));
    }

    #[test]
    fn retry_after_is_the_latest_reset_of_the_spent_limiters() {
        let decision = |allowed, remaining, reset| Decision {
            policy: "p".into(),
            allowed,
            limit: 10,
            remaining,
            reset: Duration::from_secs(reset),
            window: Duration::from_secs(900),
        };
        // Global spent (its last request) and payments refused: wait for the later reset.
        let both = [decision(true, 0, 20), decision(false, 0, 10)];
        assert_eq!(retry_after(&both), Some(Duration::from_secs(20)));
        // A limiter with requests left does not hold the caller back.
        let one = [decision(true, 3, 600), decision(false, 0, 10)];
        assert_eq!(retry_after(&one), Some(Duration::from_secs(10)));
        assert_eq!(
            retry_after(&[decision(true, 0, 20)]),
            None,
            "nothing refused"
        );
        assert_eq!(retry_after(&[]), None);
    }
}
