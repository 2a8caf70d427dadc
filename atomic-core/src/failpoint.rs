//! Failpoints: named places on the money path where a fault test can make the process die at
//! once (`abort`, as `kill -9` would: no destructors, no flush), to prove that a crash between
//! two steps loses nothing and doubles nothing. They exist only in builds with the
//! `failpoints` feature (the test builds); in every other build [`hit`] is an empty inline
//! function and [`init_from_env`] does nothing.
//!
//! Armed once at start-up from `ATOMIC_FAILPOINTS`: a comma-separated list of `name` (abort at
//! the first hit) or `name@N` (abort at the N-th hit), e.g.
//! `ATOMIC_FAILPOINTS=worker.after_settle_commit@2`. The names are the `pub const`s below.

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

    /// One armed failpoint: aborts at its `at`-th hit.
    pub(super) struct Armed {
        pub(super) name: &'static str,
        pub(super) at: u64,
        pub(super) hits: AtomicU64,
    }

    pub(super) static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();

    pub(super) fn parse(spec: &str) -> Result<Vec<Armed>, String> {
        let mut armed = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, at) = match item.split_once('@') {
                None => (item, 1),
                Some((name, n)) => match n.parse::<u64>() {
                    Ok(n) if n >= 1 => (name, n),
                    _ => {
                        return Err(format!(
                            "failpoint {item:?}: the hit after @ is a count >= 1"
                        ));
                    }
                },
            };
            let Some(name) = super::ALL.iter().copied().find(|known| *known == name) else {
                return Err(format!(
                    "unknown failpoint {name:?} (known: {})",
                    super::ALL.join(", ")
                ));
            };
            armed.push(Armed {
                name,
                at,
                hits: AtomicU64::new(0),
            });
        }
        Ok(armed)
    }

    pub(super) fn hit(name: &str) {
        let Some(armed) = ARMED.get() else { return };
        for point in armed.iter().filter(|p| p.name == name) {
            if point.hits.fetch_add(1, Ordering::SeqCst) + 1 == point.at {
                eprintln!("failpoint {name} (hit {}): aborting the process", point.at);
                std::process::abort();
            }
        }
    }
}

/// Arms the failpoints named in `ATOMIC_FAILPOINTS` (call once, at start-up). Without the
/// `failpoints` feature this does nothing and always succeeds.
pub fn init_from_env() -> Result<(), String> {
    #[cfg(feature = "failpoints")]
    {
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

/// Marks a failpoint: aborts the process here if it is armed and this is its hit.
#[inline(always)]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    armed::hit(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::armed::parse;

    #[test]
    fn specs_name_known_points_and_hit_counts() {
        let armed = parse("worker.after_claim, worker.after_settle_commit@3").unwrap();
        assert_eq!(
            armed.iter().map(|a| (a.name, a.at)).collect::<Vec<_>>(),
            [("worker.after_claim", 1), ("worker.after_settle_commit", 3)]
        );
        assert!(parse("").unwrap().is_empty());
        assert!(parse("worker.after_lunch").is_err());
        assert!(parse("worker.after_claim@0").is_err());
        assert!(parse("worker.after_claim@x").is_err());
    }
}
