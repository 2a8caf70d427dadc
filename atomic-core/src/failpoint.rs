//! Failpoints: named places on the money path where a fault test can make the process die at
//! once (`abort`, as `kill -9` would: no destructors, no flush), to prove that a crash between
//! two steps loses nothing and doubles nothing. They act only in builds with the `failpoints`
//! feature (the test builds, [`ENABLED`]); in every other build [`hit`] is an empty inline
//! function and [`arm`] does nothing.
//!
//! The core reads no environment: the embedder parses a [`Failpoints`] (the server, from
//! `ATOMIC_FAILPOINTS`) and arms it once at start-up. The spec is a comma-separated list of
//! `name` (abort at the first hit), `name@N` (abort at the N-th hit) or `name=sleepMS` (pause
//! that long at every hit, e.g. to make a worker outlive its lease):
//! `worker.after_claim, worker.after_settle_commit@2, worker.after_claim=sleep1500`. The names
//! are the `pub const`s below. A [`ClockSkew`] (`+600s`, `-10m`; the server's
//! `ATOMIC_CLOCK_SKEW`) gives a clock shifted from the system's, for clock-skew tests.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Invalid;
use crate::time::{Clock, Timestamp, parse_duration};

/// Whether this build carries failpoints (the `failpoints` feature): embedders read
/// `ATOMIC_FAILPOINTS`-style settings only when it does.
pub const ENABLED: bool = cfg!(feature = "failpoints");

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

/// What an armed failpoint does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Abort the process at this hit (1-based).
    AbortAt(u64),
    /// Pause at every hit.
    Sleep(Duration),
}

impl Action {
    /// Reads one item of a spec: `name`, `name@N` or `name=sleepMS`.
    fn parse(item: &str) -> Result<(&str, Self), Invalid> {
        if let Some((name, what)) = item.split_once('=') {
            return match what.strip_prefix("sleep").map(str::parse::<u64>) {
                Some(Ok(ms)) => Ok((name, Self::Sleep(Duration::from_millis(ms)))),
                _ => Err(Invalid::owned(format!(
                    "failpoint {item:?}: the action after = is sleepMS"
                ))),
            };
        }
        match item.split_once('@') {
            None => Ok((item, Self::AbortAt(1))),
            Some((name, n)) => match n.parse::<u64>() {
                Ok(n) if n >= 1 => Ok((name, Self::AbortAt(n))),
                _ => Err(Invalid::owned(format!(
                    "failpoint {item:?}: the hit after @ is a count >= 1"
                ))),
            },
        }
    }
}

/// Failpoints to arm: each a known name and what it does there. Empty by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failpoints(Vec<(&'static str, Action)>);

impl Failpoints {
    /// Parses a spec (see the module docs); an empty spec arms nothing.
    pub fn parse(spec: &str) -> Result<Self, Invalid> {
        let mut points = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, action) = Action::parse(item)?;
            let Some(name) = ALL.iter().copied().find(|known| *known == name) else {
                return Err(Invalid::owned(format!(
                    "unknown failpoint {name:?} (known: {})",
                    ALL.join(", ")
                )));
            };
            points.push((name, action));
        }
        Ok(Self(points))
    }

    /// The armed points, in the spec's order.
    pub fn points(&self) -> &[(&'static str, Action)] {
        &self.0
    }

    /// Whether nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How far a process's clock is set off the system clock, for clock-skew tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSkew {
    /// Ahead of the system clock (`+`) or behind it (`-`).
    pub ahead: bool,
    /// By how much.
    pub by: Duration,
}

impl ClockSkew {
    /// Parses `+600s`, `-10m`: a sign, then a configuration duration.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let text = text.trim();
        let (ahead, rest) = match text.split_at_checked(1) {
            Some(("+", rest)) => (true, rest),
            Some(("-", rest)) => (false, rest),
            _ => {
                return Err(Invalid::owned(format!(
                    "clock skew {text:?}: start with + or -"
                )));
            }
        };
        let by = parse_duration(rest)
            .map_err(|e| Invalid::owned(format!("clock skew {text:?}: {e}")))?;
        Ok(Self { ahead, by })
    }

    /// The system clock, shifted by this skew.
    pub fn clock(self) -> Arc<dyn Clock> {
        Arc::new(SkewedClock(self))
    }
}

/// The system clock, shifted by a [`ClockSkew`].
#[derive(Debug)]
struct SkewedClock(ClockSkew);

impl Clock for SkewedClock {
    fn now(&self) -> Timestamp {
        let now = Timestamp::now();
        if self.0.ahead {
            now.saturating_add(self.0.by)
        } else {
            now.saturating_sub(self.0.by)
        }
    }
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{Action, Failpoints};

    /// One armed failpoint and how often it was hit.
    struct Armed {
        name: &'static str,
        action: Action,
        hits: AtomicU64,
    }

    static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();

    pub(super) fn arm(failpoints: &Failpoints) {
        let armed = failpoints.points().iter().map(|&(name, action)| Armed {
            name,
            action,
            hits: AtomicU64::new(0),
        });
        // A second arming keeps the first.
        let _ = ARMED.set(armed.collect());
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

/// Arms `failpoints` for this process (call once, at start-up; a second call keeps the
/// first arming). Without the `failpoints` feature this does nothing.
pub fn arm(failpoints: &Failpoints) {
    if !failpoints.is_empty() {
        tracing::warn!(
            ?failpoints,
            "failpoints armed: this process will abort on purpose"
        );
    }
    #[cfg(feature = "failpoints")]
    armed::arm(failpoints);
}

/// Marks a failpoint: aborts or pauses here if it is armed (without the feature: nothing).
#[inline(always)]
pub async fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    armed::hit(name).await;
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Action, ClockSkew, Failpoints};

    #[test]
    fn specs_name_known_points_hit_counts_and_pauses() {
        let armed = Failpoints::parse(
            "worker.after_claim, worker.after_settle_commit@3, payment.after_insert_before_enqueue=sleep25",
        )
        .unwrap();
        assert_eq!(
            armed.points(),
            [
                ("worker.after_claim", Action::AbortAt(1)),
                ("worker.after_settle_commit", Action::AbortAt(3)),
                (
                    "payment.after_insert_before_enqueue",
                    Action::Sleep(Duration::from_millis(25))
                ),
            ]
        );
        assert!(Failpoints::parse("").unwrap().is_empty());
        for bad in [
            "worker.after_lunch",
            "worker.after_claim@0",
            "worker.after_claim@x",
            "worker.after_claim=nap",
        ] {
            assert!(Failpoints::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn skews_have_a_sign_and_a_duration() {
        let skew = |ahead, secs| ClockSkew {
            ahead,
            by: Duration::from_secs(secs),
        };
        assert_eq!(ClockSkew::parse("+600s").unwrap(), skew(true, 600));
        assert_eq!(ClockSkew::parse("-10m").unwrap(), skew(false, 600));
        for bad in ["", "10m", "+soon"] {
            assert!(ClockSkew::parse(bad).is_err(), "{bad}");
        }
    }
}
