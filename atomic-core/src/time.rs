//! Time: [`Timestamp`] (UTC, microsecond precision, the precision PostgreSQL keeps, so a value
//! reads back equal to what was written) and the [`Clock`] the core reads it from, swappable
//! for a [`ManualClock`] in tests.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use time::{OffsetDateTime, UtcOffset};

/// An instant in UTC with microsecond precision.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current system time.
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    /// A timestamp from any date-time (converted to UTC, truncated to microseconds).
    pub fn from_datetime(at: OffsetDateTime) -> Self {
        let at = at.to_offset(UtcOffset::UTC);
        let micros = at.microsecond();
        // Truncating sub-microsecond digits never leaves the valid range.
        Self(at.replace_microsecond(micros).unwrap_or(at))
    }

    /// A timestamp from microseconds since the Unix epoch.
    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .ok()
            .map(Self)
    }

    /// The date-time inside (UTC).
    pub fn as_datetime(&self) -> OffsetDateTime {
        self.0
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(&self) -> i64 {
        // Microseconds since 1970 fit i64 for every year `time` supports by default.
        i64::try_from(self.0.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
    }

    /// The latest representable instant.
    pub fn max() -> Self {
        Self::from_datetime(time::PrimitiveDateTime::MAX.assume_utc())
    }

    /// The earliest representable instant.
    pub fn min() -> Self {
        Self::from_datetime(time::PrimitiveDateTime::MIN.assume_utc())
    }

    /// This instant plus a duration, saturating at [`Timestamp::max`].
    pub fn saturating_add(&self, duration: Duration) -> Self {
        time::Duration::try_from(duration)
            .ok()
            .and_then(|d| self.0.checked_add(d))
            .map_or_else(Self::max, Self::from_datetime)
    }

    /// This instant minus a duration, saturating at [`Timestamp::min`].
    pub fn saturating_sub(&self, duration: Duration) -> Self {
        time::Duration::try_from(duration)
            .ok()
            .and_then(|d| self.0.checked_sub(d))
            .map_or_else(Self::min, Self::from_datetime)
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn duration_since(&self, earlier: Timestamp) -> Duration {
        Duration::try_from(self.0 - earlier.0).unwrap_or(Duration::ZERO)
    }
}

/// RFC 3339 in UTC with six fractional digits, e.g. `2026-11-25T00:32:20.123456Z`: always
/// six, so every timestamp the API serves has one width (`Rfc3339` itself trims the fraction).
const DISPLAY: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.format(DISPLAY).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

/// Where the core reads the time from.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to; for tests of leases, TTLs and windows.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Mutex::new(start))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now = now.saturating_add(by);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new(Timestamp::now())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc_with_micros() {
        let t = Timestamp::from_unix_micros(1_764_030_740_123_456).unwrap();
        assert_eq!(t.to_string(), "2025-11-25T00:32:20.123456Z");
        assert_eq!(Timestamp::from_unix_micros(t.unix_micros()), Some(t));
        let epoch = Timestamp::from_unix_micros(0).unwrap();
        assert_eq!(epoch.to_string(), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn arithmetic_saturates_at_the_ends_of_time() {
        let now = Timestamp::now();
        let forever = Duration::from_secs(u64::MAX);
        assert_eq!(now.saturating_add(forever), Timestamp::max());
        assert!(now.saturating_add(Duration::from_secs(10u64.pow(12))) > now);
        assert_eq!(now.saturating_sub(forever), Timestamp::min());
        assert_eq!(
            Timestamp::max().saturating_add(Duration::from_secs(1)),
            Timestamp::max()
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = Timestamp::from_unix_micros(0).unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now().duration_since(start), Duration::from_secs(90));
        assert_eq!(start.duration_since(clock.now()), Duration::ZERO);
    }
}

/// Parses a configuration duration: whole seconds (`90`) or what `humantime` reads, whole
/// numbers glued to a unit (`500ms`, `15m`, `24h`, `2d`, `1h30m`). Zero, fractions, spaces and
/// anything finer than a millisecond are refused.
pub fn parse_duration(text: &str) -> Result<Duration, crate::error::Invalid> {
    use crate::error::Invalid;
    const FORMS: &str = "must be seconds, or a number followed by ms, s, m, h or d";
    let text = text.trim();
    // humantime also reads `1.5h` and `1 h`; a configuration keeps to the compact forms.
    if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Invalid::new(FORMS));
    }
    let parsed = if text.bytes().all(|b| b.is_ascii_digit()) {
        humantime::parse_duration(&format!("{text}s"))
    } else {
        humantime::parse_duration(text)
    };
    let duration = parsed.map_err(|_| Invalid::new(FORMS))?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(Invalid::new(FORMS));
    }
    if duration.is_zero() {
        return Err(Invalid::new("must be a positive duration"));
    }
    Ok(duration)
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        for bad in [
            "",
            "0",
            "0s",
            "0ms",
            "ms",
            "5us",
            "m",
            "1.5h",
            "-1",
            "10x",
            "1 h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
