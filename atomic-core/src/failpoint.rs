//! Failpoints: named places on the money path where a fault test can make the process die at
//! once (`abort`, as `kill -9` would: no destructors, no flush), to prove that a crash between
//! two steps loses nothing and doubles nothing. They exist only in builds with the
//! `failpoints` feature (the test builds); in every other build [`hit`] is an empty inline
//! function and [`init_from_env`] does nothing.
//!
//! Armed once at start-up from `ATOMIC_FAILPOINTS`: a comma-separated list of `name` (abort at
//! the first hit), `name@N` (abort at the N-th hit) or `name=sleepMS` (pause that long at every
//! hit, e.g. to make a worker outlive its lease): `worker.after_settle_commit@2`,
//! `worker.after_claim=sleep1500`. The names are the `pub const`s below. `ATOMIC_CLOCK_SKEW`
//! (`+600s`, `-10m`) shifts the process's clock, for clock-skew tests ([`skewed_clock`]).

/// After a batch of payments is claimed (`PROCESSING` committed under a lease), before any
/// card is charged or anything is posted.
pub const WORKER_AFTER_CLAIM: &str = "worker.after_claim";
/// After a batch's settlement committed, before its jobs are acknowledged.
pub const WORKER_AFTER_SETTLE_COMMIT: &str = "worker.after_settle_commit";
/// After an accepted payment is stored, before its job is enqueued (and before the 202).
pub const PAYMENT_AFTER_INSERT: &str = "payment.after_insert_before_enqueue";

/// Every failpoint name, for checking a configuration.
pub const ALL: [&str; 3] = [
    WORKER_AFTER_CLAIM,
    WORKER_AFTER_SETTLE_COMMIT,
    PAYMENT_AFTER_INSERT,
];

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// What an armed failpoint does.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub(super) enum Action {
        /// Abort the process at this hit (1-based).
        AbortAt(u64),
        /// Pause at every hit.
        Sleep(Duration),
    }

    /// One armed failpoint.
    pub(super) struct Armed {
        pub(super) name: &'static str,
        pub(super) action: Action,
        pub(super) hits: AtomicU64,
    }

    pub(super) static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();

    /// `ATOMIC_CLOCK_SKEW`: how far this process's clock runs ahead (`true`) or behind.
    pub(super) static SKEW: OnceLock<Option<(bool, Duration)>> = OnceLock::new();

    /// Parses `+600s`, `-10m` (a sign, then a configuration duration).
    pub(super) fn parse_skew(text: &str) -> Result<Option<(bool, Duration)>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let (ahead, rest) = match text.split_at(1) {
            ("+", rest) => (true, rest),
            ("-", rest) => (false, rest),
            _ => return Err(format!("clock skew {text:?}: start with + or -")),
        };
        crate::time::parse_duration(rest)
            .map(|by| Some((ahead, by)))
            .map_err(|e| format!("clock skew {text:?}: {e}"))
    }

    /// The system clock, shifted by the skew.
    #[derive(Debug)]
    pub(super) struct SkewedClock {
        pub(super) ahead: bool,
        pub(super) by: Duration,
    }

    impl crate::time::Clock for SkewedClock {
        fn now(&self) -> crate::time::Timestamp {
            let now = crate::time::Timestamp::now();
            if self.ahead {
                now.saturating_add(self.by)
            } else {
                now.saturating_sub(self.by)
            }
        }
    }

    fn action(item: &str) -> Result<(&str, Action), String> {
        if let Some((name, what)) = item.split_once('=') {
            return match what.strip_prefix("sleep").map(str::parse::<u64>) {
                Some(Ok(ms)) => Ok((name, Action::Sleep(Duration::from_millis(ms)))),
                _ => Err(format!("failpoint {item:?}: the action after = is sleepMS")),
            };
        }
        match item.split_once('@') {
            None => Ok((item, Action::AbortAt(1))),
            Some((name, n)) => match n.parse::<u64>() {
                Ok(n) if n >= 1 => Ok((name, Action::AbortAt(n))),
                _ => Err(format!(
                    "failpoint {item:?}: the hit after @ is a count >= 1"
                )),
            },
        }
    }

    pub(super) fn parse(spec: &str) -> Result<Vec<Armed>, String> {
        let mut armed = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, action) = action(item)?;
            let Some(name) = super::ALL.iter().copied().find(|known| *known == name) else {
                return Err(format!(
                    "unknown failpoint {name:?} (known: {})",
                    super::ALL.join(", ")
                ));
            };
            armed.push(Armed {
                name,
                action,
                hits: AtomicU64::new(0),
            });
        }
        Ok(armed)
    }

    pub(super) async fn hit(name: &str) {
        let Some(armed) = ARMED.get() else { return };
        for point in armed.iter().filter(|p| p.name == name) {
            let hit = point.hits.fetch_add(1, Ordering::SeqCst) + 1;
            match point.action {
                Action::AbortAt(at) if hit == at => {
                    eprintln!("failpoint {name} (hit {at}): aborting the process");
                    std::process::abort();
                }
                Action::AbortAt(_) => {}
                Action::Sleep(pause) => tokio::time::sleep(pause).await,
            }
        }
    }
}

/// Arms the failpoints named in `ATOMIC_FAILPOINTS` (call once, at start-up). Without the
/// `failpoints` feature this does nothing and always succeeds.
pub fn init_from_env() -> Result<(), String> {
    #[cfg(feature = "failpoints")]
    {
        let skew = armed::parse_skew(&std::env::var("ATOMIC_CLOCK_SKEW").unwrap_or_default())?;
        if let Some((ahead, by)) = skew {
            tracing::warn!(
                ahead,
                ?by,
                "clock skew armed: this process's clock is off on purpose"
            );
        }
        let _ = armed::SKEW.set(skew);
        let spec = std::env::var("ATOMIC_FAILPOINTS").unwrap_or_default();
        let parsed = armed::parse(&spec)?;
        if !parsed.is_empty() {
            tracing::warn!(failpoints = %spec, "failpoints armed: this process will abort on purpose");
        }
        // A second call keeps the first arming.
        let _ = armed::ARMED.set(parsed);
    }
    Ok(())
}

/// Test builds only: the clock `ATOMIC_CLOCK_SKEW` asks for (`+600s`: ten minutes ahead of
/// the system clock, `-10m`: behind), for clock-skew tests; `None` when unset or without the
/// feature.
pub fn skewed_clock() -> Option<std::sync::Arc<dyn crate::time::Clock>> {
    #[cfg(feature = "failpoints")]
    if let Some(Some((ahead, by))) = armed::SKEW.get() {
        return Some(std::sync::Arc::new(armed::SkewedClock {
            ahead: *ahead,
            by: *by,
        }));
    }
    None
}

/// Marks a failpoint: aborts or pauses here if it is armed (without the feature: nothing).
#[inline(always)]
pub async fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    armed::hit(name).await;
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use std::time::Duration;

    use super::armed::{Action, parse};

    #[test]
    fn specs_name_known_points_hit_counts_and_pauses() {
        let armed = parse(
            "worker.after_claim, worker.after_settle_commit@3, payment.after_insert_before_enqueue=sleep25",
        )
        .unwrap();
        assert_eq!(
            armed.iter().map(|a| (a.name, a.action)).collect::<Vec<_>>(),
            [
                ("worker.after_claim", Action::AbortAt(1)),
                ("worker.after_settle_commit", Action::AbortAt(3)),
                (
                    "payment.after_insert_before_enqueue",
                    Action::Sleep(Duration::from_millis(25))
                ),
            ]
        );
        assert!(parse("").unwrap().is_empty());
        assert!(parse("worker.after_lunch").is_err());
        assert!(parse("worker.after_claim@0").is_err());
        assert!(parse("worker.after_claim@x").is_err());
        assert!(parse("worker.after_claim=nap").is_err());
    }

    #[test]
    fn skews_have_a_sign_and_a_duration() {
        use super::armed::parse_skew;
        assert_eq!(
            parse_skew("+600s").unwrap(),
            Some((true, Duration::from_secs(600)))
        );
        assert_eq!(
            parse_skew("-10m").unwrap(),
            Some((false, Duration::from_secs(600)))
        );
        assert_eq!(parse_skew("").unwrap(), None);
        assert!(parse_skew("10m").is_err());
        assert!(parse_skew("+soon").is_err());
    }
}
