//! The run second by second (`--series FILE`): how many payments went out, how many were
//! answered 202 and the p99 latency of those answers in each second of the load, with the
//! follower's backlog where it sampled one. `loadgen chart` draws it.
//!
//! Each connection counts into its own [`Buckets`] (no lock on the hot path); the run merges
//! them once the load has ended. A second keeps the latencies of its answers (4 bytes each: at
//! 10,000/s for 60 s, 2.4 MB), so its p99 is exact.
//!
//! The CSV has a header and one row per second from the start of the load to its last answer:
//! `second,offered_per_s,accepted_per_s,p99_ms,backlog`. `offered_per_s` counts the sends
//! started in that second, `accepted_per_s` the 202s that arrived in it, `p99_ms` is the p99 of
//! their latency (empty when none arrived), `backlog` the last sample taken in that second
//! (empty without one).

use std::fmt::Write as _;
use std::time::Duration;

use crate::follow::Sample;

/// The CSV's first line.
const HEADER: &str = "second,offered_per_s,accepted_per_s,p99_ms,backlog";

/// One second's counts on one connection (or, merged, the run's).
#[derive(Debug, Clone, Default, PartialEq)]
struct Bucket {
    sent: u64,
    accepted: u64,
    latencies_us: Vec<u32>,
}

/// Per-second counts since the start of the load, indexed by whole second.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Buckets {
    seconds: Vec<Bucket>,
}

impl Buckets {
    /// The bucket of the second `since_start` falls in, created (with the ones before) if new.
    fn at(&mut self, since_start: Duration) -> &mut Bucket {
        let second = since_start.as_secs() as usize;
        if self.seconds.len() <= second {
            self.seconds.resize_with(second + 1, Bucket::default);
        }
        &mut self.seconds[second]
    }

    /// Counts a send started `since_start` into the load.
    pub(crate) fn sent(&mut self, since_start: Duration) {
        self.at(since_start).sent += 1;
    }

    /// Counts a 202 that arrived `since_start` into the load, `latency` after its send was due.
    pub(crate) fn accepted(&mut self, since_start: Duration, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let bucket = self.at(since_start);
        bucket.accepted += 1;
        bucket.latencies_us.push(micros);
    }

    /// Adds another connection's counts, second by second.
    pub(crate) fn merge(&mut self, other: Buckets) {
        if self.seconds.len() < other.seconds.len() {
            self.seconds
                .resize_with(other.seconds.len(), Bucket::default);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(other.seconds) {
            mine.sent += theirs.sent;
            mine.accepted += theirs.accepted;
            mine.latencies_us.extend(theirs.latencies_us);
        }
    }

    /// One row per second, with the backlog of the last of `samples` (in time order) taken in
    /// that second.
    pub(crate) fn into_rows(self, samples: &[Sample]) -> Vec<Row> {
        self.seconds
            .into_iter()
            .enumerate()
            .map(|(second, mut bucket)| {
                let second = second as u64;
                Row {
                    second,
                    offered: bucket.sent,
                    accepted: bucket.accepted,
                    p99_ms: p99(&mut bucket.latencies_us).map(|us| f64::from(us) / 1_000.0),
                    backlog: samples
                        .iter()
                        .rev()
                        .find(|s| s.at.as_secs() == second)
                        .map(|s| s.backlog),
                }
            })
            .collect()
    }
}

/// The 99th percentile (nearest rank) of `values`, which it sorts; `None` when empty.
fn p99(values: &mut [u32]) -> Option<u32> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (values.len() * 99).div_ceil(100).max(1);
    Some(values[rank - 1])
}

/// One second of the run, as the CSV holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    /// Whole seconds since the start of the load.
    pub(crate) second: u64,
    /// Sends started in this second.
    pub(crate) offered: u64,
    /// 202 answers that arrived in this second.
    pub(crate) accepted: u64,
    /// p99 latency of those answers, ms (`None` when none arrived).
    pub(crate) p99_ms: Option<f64>,
    /// Payments still open at the follower's last sample in this second, if it took one.
    pub(crate) backlog: Option<u64>,
}

/// The rows as CSV text, header first.
pub(crate) fn to_csv(rows: &[Row]) -> String {
    let mut out = String::with_capacity(32 * (rows.len() + 1));
    out.push_str(HEADER);
    out.push('\n');
    for r in rows {
        let p99 = r.p99_ms.map(|v| format!("{v:.3}")).unwrap_or_default();
        let backlog = r.backlog.map(|v| v.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{p99},{backlog}",
            r.second, r.offered, r.accepted
        );
    }
    out
}

/// Reads CSV text written by [`to_csv`]; the error names the line it stopped at.
pub(crate) fn parse_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == HEADER => {}
        _ => return Err(format!("the first line is not the header {HEADER:?}")),
    }
    lines
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| parse_row(line).map_err(|why| format!("line {}: {why}", i + 1)))
        .collect()
}

/// One data line: five comma-separated fields, the last two possibly empty.
fn parse_row(line: &str) -> Result<Row, String> {
    let fields: Vec<&str> = line.trim().split(',').map(str::trim).collect();
    let [second, offered, accepted, p99_ms, backlog] = fields[..] else {
        return Err(format!("{} fields, expected 5", fields.len()));
    };
    Ok(Row {
        second: whole(second, "second")?,
        offered: whole(offered, "offered_per_s")?,
        accepted: whole(accepted, "accepted_per_s")?,
        p99_ms: match p99_ms {
            "" => None,
            v => Some(
                v.parse::<f64>()
                    .ok()
                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                    .ok_or_else(|| format!("p99_ms {v:?} is not a number of ms"))?,
            ),
        },
        backlog: match backlog {
            "" => None,
            v => Some(whole(v, "backlog")?),
        },
    })
}

fn whole(value: &str, name: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{name} {value:?} is not a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, backlog: u64) -> Sample {
        Sample {
            at: Duration::from_millis(at_ms),
            accepted: 0,
            backlog,
            exact: true,
        }
    }

    #[test]
    fn connections_merge_second_by_second() {
        let ms = Duration::from_millis;
        let mut a = Buckets::default();
        a.sent(ms(100));
        a.accepted(ms(150), ms(50));
        a.sent(ms(2_100));
        let mut b = Buckets::default();
        b.sent(ms(900));
        b.accepted(ms(1_050), ms(150));
        a.merge(b);
        let rows = a.into_rows(&[sample(500, 7), sample(900, 3), sample(2_500, 1)]);
        let cells: Vec<_> = rows
            .iter()
            .map(|r| (r.second, r.offered, r.accepted, r.p99_ms, r.backlog))
            .collect();
        assert_eq!(
            cells,
            [
                (0, 2, 1, Some(50.0), Some(3)),
                (1, 0, 1, Some(150.0), None),
                (2, 1, 0, None, Some(1)),
            ]
        );
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        let mut hundred: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(p99(&mut hundred), Some(99));
        assert_eq!(p99(&mut [7]), Some(7));
        let mut thousand: Vec<u32> = (1..=1_000).collect();
        assert_eq!(p99(&mut thousand), Some(990));
        assert_eq!(p99(&mut []), None);
    }

    #[test]
    fn csv_round_trip() {
        let rows = vec![
            Row {
                second: 0,
                offered: 200,
                accepted: 198,
                p99_ms: Some(12.345),
                backlog: Some(40),
            },
            Row {
                second: 1,
                offered: 200,
                accepted: 0,
                p99_ms: None,
                backlog: None,
            },
        ];
        let text = to_csv(&rows);
        assert_eq!(
            text,
            "second,offered_per_s,accepted_per_s,p99_ms,backlog\n0,200,198,12.345,40\n1,200,0,,\n"
        );
        assert_eq!(parse_csv(&text).unwrap(), rows);
        assert_eq!(parse_csv(HEADER).unwrap(), []);
    }

    #[test]
    fn a_bad_csv_says_where() {
        assert!(parse_csv("").unwrap_err().contains("header"));
        let bad = format!("{HEADER}\n0,1,1,,\n1,x,1,,\n");
        let error = parse_csv(&bad).unwrap_err();
        assert!(error.starts_with("line 3: offered_per_s"), "{error}");
        let short = format!("{HEADER}\n0,1,1\n");
        assert_eq!(
            parse_csv(&short).unwrap_err(),
            "line 2: 3 fields, expected 5"
        );
        let negative = format!("{HEADER}\n0,1,1,-2,\n");
        assert!(parse_csv(&negative).unwrap_err().contains("p99_ms"));
    }
}
