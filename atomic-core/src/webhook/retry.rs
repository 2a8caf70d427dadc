//! When a failed delivery is tried again (API.md *Precise rules of v1.1*, Retries): the first
//! attempt is immediate; after the n-th failed attempt the next comes `schedule[n-1]` later;
//! after 1 + len(schedule) attempts the delivery is `FAILED`.

use std::time::Duration;

use crate::error::Invalid;
use crate::time::parse_duration;

/// The default `WEBHOOK_RETRY_SCHEDULE`.
pub const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

/// The delays between a delivery's attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// Parses a comma-separated list of durations (`5s,5m,30m`); an empty list means one
    /// attempt and no retry.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        if text.trim().is_empty() {
            return Ok(Self(Vec::new()));
        }
        text.split(',')
            .map(|step| {
                parse_duration(step)
                    .map_err(|e| Invalid::owned(format!("retry step {step:?} {}", e.message())))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// How many attempts a delivery gets in all.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.0.len()).map_or(u32::MAX, |n| n.saturating_add(1))
    }

    /// How long after its `attempts`-th failed attempt a delivery is tried again; `None` once
    /// the schedule is spent (the delivery is then `FAILED`).
    pub fn after_failure(&self, attempts: u32) -> Option<Duration> {
        let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
        self.0.get(index).copied()
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self(vec![
            Duration::from_secs(5),
            minutes(5),
            minutes(30),
            minutes(120),
            minutes(300),
            minutes(600),
            minutes(600),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_the_documented_one() {
        assert_eq!(
            RetrySchedule::parse(DEFAULT_SCHEDULE),
            Ok(RetrySchedule::default())
        );
        assert_eq!(RetrySchedule::default().max_attempts(), 8);
    }

    #[test]
    fn the_nth_failure_waits_the_nth_step_and_the_last_ends_it() {
        let schedule = RetrySchedule::parse("5s,5m,30m").unwrap();
        assert_eq!(schedule.max_attempts(), 4);
        assert_eq!(schedule.after_failure(0), None, "no attempt has failed yet");
        assert_eq!(schedule.after_failure(1), Some(Duration::from_secs(5)));
        assert_eq!(schedule.after_failure(2), Some(Duration::from_secs(300)));
        assert_eq!(schedule.after_failure(3), Some(Duration::from_secs(1_800)));
        assert_eq!(schedule.after_failure(4), None, "4 attempts: FAILED");
    }

    #[test]
    fn an_empty_schedule_is_one_attempt_and_bad_steps_are_refused() {
        let once = RetrySchedule::parse("").unwrap();
        assert_eq!((once.max_attempts(), once.after_failure(1)), (1, None));
        for bad in ["5s,,5m", "5s,0s", "5x", "five", "5s, soon"] {
            assert!(RetrySchedule::parse(bad).is_err(), "{bad:?}");
        }
    }
}
