//! What a run prints: a progress line on stderr every second while it runs, and at the end a
//! table, one human summary line (`accepted/s=… p99_ms=… settled/s=… sustained/s=… books=ok`)
//! and one machine line starting with `summary ` (space-separated `key=value`, `na` when a
//! figure does not apply), both on stdout so a script can grep them.
//!
//! Figures:
//! - `accepted/s`: 202 answers per second from the first send to the last answer.
//! - `settled/s`: payments that reached SUCCESS/FAILED per second, from the start to the last
//!   one (the end-to-end throughput); `settled_during/s` and `settled_after/s` split it at the
//!   end of the load (while accepting, and draining after).
//! - `sustained/s`: payments both accepted and settled while the load ran, per second of load:
//!   what the server carries indefinitely (below the accept rate when a backlog builds).
//! - `missed` / `kept_up` (open loop): a run stops sending one second after its duration, so a
//!   server far below the offered rate ends the run on time; what was never sent is `missed`,
//!   and `kept_up=yes` only when nothing was.
//! - With the books check, settlement times are the payments' own `updatedAt` (server clock,
//!   exact); without it, they come from the samples (resolution `--poll-interval`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::args::Load;
use crate::follow::{FollowOutcome, Sample};
use crate::run::Shared;
use crate::verify::Books;

/// When the run's payments reached a final state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Timeline {
    /// Payments settled by the end of the load.
    pub(crate) during: u64,
    /// Payments settled in all.
    pub(crate) total: u64,
    /// Seconds from the start to the last one.
    pub(crate) last_terminal: f64,
    /// `server` (updatedAt stamps) or `samples`.
    pub(crate) source: &'static str,
}

impl Timeline {
    /// From the server's `updatedAt` stamps (µs since the epoch) of the run's payments;
    /// `None` when they do not fit the local clock (a remote server with a skewed clock).
    pub(crate) fn from_server_times(
        times: &[i64],
        start_us: i64,
        load: Duration,
        accepted: usize,
    ) -> Option<Timeline> {
        if times.is_empty() || times.len() != accepted {
            return None;
        }
        let load_end = start_us + i64::try_from(load.as_micros()).ok()?;
        let min = *times.iter().min()?;
        let max = *times.iter().max()?;
        // Allow a little slack for rounding; a stamp before the run means another clock.
        if min < start_us - 1_000_000 {
            return None;
        }
        Some(Timeline {
            during: times.iter().filter(|t| **t <= load_end).count() as u64,
            total: times.len() as u64,
            last_terminal: (max - start_us).max(0) as f64 / 1e6,
            source: "server",
        })
    }

    /// From the follower's samples: the sample at the end of the load and the drained one.
    pub(crate) fn from_samples(follow: &FollowOutcome, load: Duration) -> Option<Timeline> {
        let drained = follow.drained_at?;
        let at_end = follow.samples.iter().find(|s| s.at >= load)?;
        let last = follow.samples.last()?;
        Some(Timeline {
            during: at_end.settled(),
            total: last.settled(),
            last_terminal: drained.as_secs_f64(),
            source: "samples",
        })
    }
}

/// Whether the backlog stayed flat during an open-loop run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Flatness {
    /// Least-squares slope of the backlog over the load, payments per second.
    pub(crate) slope: f64,
    /// Growth over the measured window (slope x window).
    pub(crate) growth: f64,
    /// Growth allowed: one second's worth of load, or 1% of it, whichever is more.
    pub(crate) allowed: f64,
}

impl Flatness {
    /// Fits the samples taken during the load, after its first 10% (warm-up).
    pub(crate) fn of(samples: &[Sample], load: Duration, rate: f64) -> Option<Flatness> {
        let from = load.mul_f64(0.1);
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.at >= from && s.at <= load)
            .map(|s| (s.at.as_secs_f64(), s.backlog as f64))
            .collect();
        if points.len() < 3 {
            return None;
        }
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        let window = points[points.len() - 1].0 - points[0].0;
        let allowed = rate.max(0.01 * rate * load.as_secs_f64());
        Some(Flatness {
            slope,
            growth: slope * window,
            allowed,
        })
    }

    /// Whether the growth stayed within what is allowed.
    pub(crate) fn flat(&self) -> bool {
        self.growth <= self.allowed
    }
}

/// Everything a run measured.
#[derive(Debug)]
pub(crate) struct Report {
    /// The load offered.
    pub(crate) mode: Load,
    /// The run id (in idempotency keys and merchant names).
    pub(crate) run_id: String,
    /// Connections used.
    pub(crate) connections: usize,
    /// Merchants used.
    pub(crate) merchants: usize,
    /// Token mix as given.
    pub(crate) tokens: String,
    /// Mixed backlog or follow-only: what the jobs are (captures, refunds, charges).
    pub(crate) mix: Option<String>,
    /// Payments the load offered (open loop: rate x duration).
    pub(crate) offered: u64,
    /// Payments sent.
    pub(crate) sent: u64,
    /// Payments answered 202 (follow-only: payments followed).
    pub(crate) accepted: u64,
    /// Failures by status code or transport kind.
    pub(crate) errors: BTreeMap<String, u64>,
    /// From the start to the last answer.
    pub(crate) accept_elapsed: Duration,
    /// Latency of the accepted payments, µs.
    pub(crate) histogram: Option<Histogram<u64>>,
    /// Open loop: how far behind schedule a send started, at worst.
    pub(crate) max_lag: Duration,
    /// What following found.
    pub(crate) follow: Option<FollowOutcome>,
    /// Exact settlement times (from the books check).
    pub(crate) timeline: Option<Timeline>,
    /// The books check.
    pub(crate) books: Option<Books>,
}

/// The headline figures, computed once for the table and both summary lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Figures {
    pub(crate) accepted_per_s: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) p999_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
    pub(crate) settled: Option<u64>,
    pub(crate) settled_per_s: Option<f64>,
    pub(crate) settled_during_per_s: Option<f64>,
    pub(crate) settled_after_per_s: Option<f64>,
    pub(crate) sustained_per_s: Option<f64>,
    pub(crate) last_terminal_s: Option<f64>,
    pub(crate) drain_s: Option<f64>,
    pub(crate) backlog_max: Option<u64>,
    pub(crate) backlog_at_load_end: Option<u64>,
    pub(crate) flatness: Option<Flatness>,
    pub(crate) timeline_source: Option<&'static str>,
    pub(crate) books: Option<bool>,
}

impl Report {
    /// Computes the headline figures.
    pub(crate) fn figures(&self) -> Figures {
        let load = self.accept_elapsed.as_secs_f64();
        let mut f = Figures::default();
        if load > 0.0 {
            f.accepted_per_s = Some(self.accepted as f64 / load);
        }
        self.latency_figures(&mut f);
        if let Some(follow) = &self.follow {
            self.backlog_figures(follow, &mut f);
            if self.mode == Load::FollowOnly {
                self.follow_only_figures(follow, &mut f);
            } else if let Some(t) = self
                .timeline
                .clone()
                .or_else(|| Timeline::from_samples(follow, self.accept_elapsed))
            {
                settlement_figures(&t, load, &mut f);
            }
        }
        f.books = self.books.as_ref().map(Books::ok);
        f
    }

    /// Latency quantiles of the accepted payments, in ms.
    fn latency_figures(&self, f: &mut Figures) {
        if let Some(h) = self.histogram.as_ref().filter(|h| !h.is_empty()) {
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
            f.p50_ms = Some(ms(0.5));
            f.p99_ms = Some(ms(0.99));
            f.p999_ms = Some(ms(0.999));
            f.max_ms = Some(h.max() as f64 / 1_000.0);
        }
    }

    /// The backlog's peak, its size when sending ended and (open loop) its trend.
    fn backlog_figures(&self, follow: &FollowOutcome, f: &mut Figures) {
        f.backlog_max = follow.samples.iter().map(|s| s.backlog).max();
        f.backlog_at_load_end = follow
            .samples
            .iter()
            .find(|s| s.at >= self.accept_elapsed)
            .map(|s| s.backlog);
        if let Load::Open { rate, .. } = self.mode {
            f.flatness = Flatness::of(&follow.samples, self.accept_elapsed, rate);
        }
    }

    /// Follow-only: everything followed settled between the start and `drained`, all of it
    /// drain.
    fn follow_only_figures(&self, follow: &FollowOutcome, f: &mut Figures) {
        f.backlog_at_load_end = None;
        if let Some(drained) = follow.drained_at {
            f.timeline_source = Some("samples");
            f.settled = Some(self.accepted);
            f.last_terminal_s = Some(drained.as_secs_f64());
            f.drain_s = f.last_terminal_s;
            if drained > Duration::ZERO {
                let rate = self.accepted as f64 / drained.as_secs_f64();
                f.settled_per_s = Some(rate);
                f.settled_after_per_s = Some(rate);
            }
        }
    }

    /// The error counts as `status:count,...` (`none` when there were none).
    fn errors_compact(&self) -> String {
        if self.errors.is_empty() {
            return "none".to_owned();
        }
        self.errors
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Open loop: scheduled payments never sent because the run fell more than its grace
    /// behind schedule (the server did not keep up with the offered rate).
    pub(crate) fn missed(&self) -> u64 {
        match self.mode {
            Load::Open { .. } => self.offered.saturating_sub(self.sent),
            _ => 0,
        }
    }

    fn books_word(&self) -> &'static str {
        match &self.books {
            Some(b) if b.ok() => "ok",
            Some(_) => "FAILED",
            None => "skipped",
        }
    }

    /// The human summary line.
    pub(crate) fn human_line(&self, f: &Figures) -> String {
        format!(
            "accepted/s={} p99_ms={} settled/s={} sustained/s={} books={}",
            num(f.accepted_per_s, 0),
            num(f.p99_ms, 2),
            num(f.settled_per_s, 0),
            num(f.sustained_per_s, 0),
            self.books_word()
        )
    }

    /// The machine summary line: `summary key=value ...`.
    pub(crate) fn summary_line(&self, f: &Figures) -> String {
        let mut line = String::from("summary");
        for (k, v) in self
            .load_pairs(f)
            .into_iter()
            .chain(self.settlement_pairs(f))
        {
            let _ = write!(line, " {k}={v}");
        }
        line
    }

    /// The summary's keys about sending: the run, what was offered, accepted and how fast.
    fn load_pairs(&self, f: &Figures) -> Vec<(&'static str, String)> {
        let open = matches!(self.mode, Load::Open { .. });
        let (rate, duration) = match self.mode {
            Load::Open { rate, duration } => {
                (format!("{rate}"), format!("{}", duration.as_secs_f64()))
            }
            _ => ("na".to_owned(), "na".to_owned()),
        };
        let kept_up = if open {
            yes_no(self.missed() == 0)
        } else {
            "na"
        };
        let max_lag = if open {
            format!("{:.3}", self.max_lag.as_secs_f64() * 1e3)
        } else {
            "na".to_owned()
        };
        vec![
            ("mode", self.mode.name().to_owned()),
            ("run", self.run_id.clone()),
            ("connections", self.connections.to_string()),
            ("merchants", self.merchants.to_string()),
            ("rate", rate),
            ("duration_s", duration),
            ("offered", self.offered.to_string()),
            ("sent", self.sent.to_string()),
            ("missed", self.missed().to_string()),
            ("kept_up", kept_up.to_owned()),
            ("accepted", self.accepted.to_string()),
            ("errors", self.errors.values().sum::<u64>().to_string()),
            ("errors_by_status", self.errors_compact()),
            (
                "load_s",
                format!("{:.3}", self.accept_elapsed.as_secs_f64()),
            ),
            ("accepted_per_s", num(f.accepted_per_s, 1)),
            ("p50_ms", num(f.p50_ms, 3)),
            ("p99_ms", num(f.p99_ms, 3)),
            ("p999_ms", num(f.p999_ms, 3)),
            ("max_ms", num(f.max_ms, 3)),
            ("max_lag_ms", max_lag),
        ]
    }

    /// The summary's keys about settlement, the backlog, following and the books.
    fn settlement_pairs(&self, f: &Figures) -> Vec<(&'static str, String)> {
        let flat = match (&f.flatness, self.mode) {
            (Some(fl), _) => yes_no(fl.flat()),
            (None, Load::Open { .. }) => "unknown",
            _ => "na",
        };
        let follow = self.follow.as_ref();
        let follow_word = match follow {
            None => "off",
            Some(o) if o.drained() => "drained",
            Some(o) if o.timed_out => "timeout",
            Some(_) => "stopped",
        };
        vec![
            ("settled", count(f.settled)),
            ("settled_per_s", num(f.settled_per_s, 1)),
            ("settled_during_per_s", num(f.settled_during_per_s, 1)),
            ("settled_after_per_s", num(f.settled_after_per_s, 1)),
            ("sustained_per_s", num(f.sustained_per_s, 1)),
            ("time_to_last_terminal_s", num(f.last_terminal_s, 3)),
            ("drain_s", num(f.drain_s, 3)),
            ("timeline", f.timeline_source.unwrap_or("na").to_owned()),
            ("backlog_max", count(f.backlog_max)),
            ("backlog_at_load_end", count(f.backlog_at_load_end)),
            (
                "backlog_slope_per_s",
                num(f.flatness.as_ref().map(|x| x.slope), 2),
            ),
            ("backlog_flat", flat.to_owned()),
            ("follow", follow_word.to_owned()),
            ("poll_requests", count(follow.map(|o| o.requests))),
            ("books", self.books_word().to_lowercase()),
        ]
    }

    /// The end-of-run table, then both summary lines.
    pub(crate) fn render(&self) -> String {
        let f = self.figures();
        let mut out = String::new();
        row(&mut out, "mode", self.mode_description());
        if let Some(mix) = &self.mix {
            row(&mut out, "jobs", mix.clone());
        }
        if self.mode != Load::FollowOnly {
            self.render_load(&f, &mut out);
        } else {
            row(&mut out, "jobs followed", self.accepted.to_string());
        }
        if let Some(follow) = &self.follow {
            render_settlement(follow, &f, &mut out);
        }
        self.render_books(&mut out);
        let _ = writeln!(out, "{}", self.human_line(&f));
        let _ = writeln!(out, "{}", self.summary_line(&f));
        out
    }

    /// The table's first row: which load, in words.
    fn mode_description(&self) -> String {
        match self.mode {
            Load::Closed { payments } => format!("closed loop, {payments} payments"),
            Load::Open { rate, duration } => {
                format!("open loop, {rate}/s for {:.1}s", duration.as_secs_f64())
            }
            Load::FollowOnly => "follow only".to_owned(),
            Load::Mixed { charges } => {
                format!("mixed backlog: captures, refunds and {charges} charges")
            }
        }
    }

    /// The table's rows about sending: the run, answers, latency and (open loop) the schedule.
    fn render_load(&self, f: &Figures, out: &mut String) {
        let run = format!(
            "{} / {} / {}",
            self.run_id, self.connections, self.merchants
        );
        row(out, "run / connections / merchants", run);
        row(out, "tokens", self.tokens.clone());
        row(
            out,
            "sent / accepted",
            format!("{} / {}", self.sent, self.accepted),
        );
        row(out, "errors by status", self.errors_compact());
        let load = format!("{:.3} s", self.accept_elapsed.as_secs_f64());
        row(out, "load time", load);
        row(out, "accepted/s", num(f.accepted_per_s, 1));
        let latency = format!(
            "{} / {} / {} ms (max {} ms)",
            num(f.p50_ms, 2),
            num(f.p99_ms, 2),
            num(f.p999_ms, 2),
            num(f.max_ms, 2)
        );
        row(out, "latency p50 / p99 / p99.9", latency);
        if let Load::Open { .. } = self.mode {
            let lag = format!("{:.2} ms", self.max_lag.as_secs_f64() * 1e3);
            row(out, "worst lag behind schedule", lag);
            row(
                out,
                "offered / missed",
                format!("{} / {}", self.offered, self.missed()),
            );
        }
    }

    /// The books row, then each problem and the first ten notes.
    fn render_books(&self, out: &mut String) {
        let Some(b) = &self.books else {
            let _ = writeln!(out, "  {:<28} skipped", "books");
            return;
        };
        let _ = writeln!(
            out,
            "  {:<28} {} (SUCCESS {}, FAILED {}, entries {}, balance {}, {} requests)",
            "books",
            self.books_word(),
            b.success,
            b.failed,
            b.entries,
            b.balance,
            b.requests
        );
        for p in &b.problems {
            let _ = writeln!(out, "    problem: {p}");
        }
        for n in b.notes.iter().take(10) {
            let _ = writeln!(out, "    note: {n}");
        }
    }

    /// Exit status: 0 unless the books are wrong or settlement did not finish.
    pub(crate) fn success(&self) -> bool {
        self.books.as_ref().is_none_or(Books::ok)
            && self.follow.as_ref().is_none_or(|f| f.drained())
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Settlement figures from a timeline: overall, while accepting, and the drain after.
fn settlement_figures(t: &Timeline, load: f64, f: &mut Figures) {
    f.timeline_source = Some(t.source);
    f.settled = Some(t.total);
    f.last_terminal_s = Some(t.last_terminal);
    if t.last_terminal > 0.0 {
        f.settled_per_s = Some(t.total as f64 / t.last_terminal);
    }
    if load > 0.0 {
        f.settled_during_per_s = Some(t.during as f64 / load);
        f.sustained_per_s = f.settled_during_per_s;
        let drain = (t.last_terminal - load).max(0.0);
        f.drain_s = Some(drain);
        if drain >= 0.05 {
            f.settled_after_per_s = Some((t.total - t.during.min(t.total)) as f64 / drain);
        }
    }
}

/// The table's rows about settlement, the backlog's trend, sampling and the backlog over time.
fn render_settlement(follow: &FollowOutcome, f: &Figures, out: &mut String) {
    row(out, "settled", count(f.settled));
    row(out, "settled/s overall", num(f.settled_per_s, 1));
    row(
        out,
        "settled/s while accepting",
        num(f.settled_during_per_s, 1),
    );
    row(
        out,
        "settled/s after (drain)",
        num(f.settled_after_per_s, 1),
    );
    row(out, "sustained/s", num(f.sustained_per_s, 1));
    let last = format!(
        "{} s (drain {} s, from {})",
        num(f.last_terminal_s, 3),
        num(f.drain_s, 3),
        f.timeline_source.unwrap_or("na")
    );
    row(out, "time to last terminal", last);
    let backlog = format!(
        "{} / {}",
        count(f.backlog_max),
        count(f.backlog_at_load_end)
    );
    row(out, "backlog max / at load end", backlog);
    if let Some(fl) = &f.flatness {
        let trend = format!(
            "{:+.2}/s, {:+.0} over the load (allowed {:.0}): {}",
            fl.slope,
            fl.growth,
            fl.allowed,
            if fl.flat() { "flat" } else { "GROWING" }
        );
        row(out, "backlog trend", trend);
    }
    let sampling = format!(
        "{} samples, {} requests, {} failed{}",
        follow.samples.len(),
        follow.requests,
        follow.failed_samples,
        if follow.timed_out { ", TIMED OUT" } else { "" }
    );
    row(out, "sampling", sampling);
    let _ = writeln!(out, "  backlog over time (t s: accepted settled backlog):");
    for s in downsample(&follow.samples, 20) {
        let _ = writeln!(
            out,
            "    {:>8.2}: {:>9} {:>9} {:>9}{}",
            s.at.as_secs_f64(),
            s.accepted,
            s.settled(),
            s.backlog,
            if s.exact { "" } else { " (est.)" }
        );
    }
}

/// One row of the end-of-run table: the name padded to a column, then the value.
fn row(out: &mut String, name: &str, value: String) {
    let _ = writeln!(out, "  {name:<28} {value}");
}

/// A count, or `na`.
fn count(value: Option<u64>) -> String {
    value.map_or("na".to_owned(), |n| n.to_string())
}

/// A number with `decimals`, or `na`.
pub(crate) fn num(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "na".to_owned(),
    }
}

/// At most `max` samples, evenly spread, always with the first and the last.
pub(crate) fn downsample(samples: &[Sample], max: usize) -> Vec<&Sample> {
    if samples.len() <= max || max < 2 {
        return samples.iter().collect();
    }
    let step = (samples.len() - 1) as f64 / (max - 1) as f64;
    (0..max)
        .map(|i| &samples[((i as f64 * step).round() as usize).min(samples.len() - 1)])
        .collect()
}

/// Prints a progress line to stderr every second until aborted.
pub(crate) async fn progress_lines(shared: Arc<Shared>, total: u64) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let (mut last_accepted, mut last_settled) = (0u64, 0u64);
    loop {
        ticker.tick().await;
        let t = shared.start.elapsed().as_secs_f64();
        let accepted = shared.accepted.load(Ordering::Relaxed);
        let mut line = if total > 0 {
            format!(
                "[{t:>7.1}s] sent {}/{total} accepted {accepted} ({}/s) errors {}",
                shared.sent.load(Ordering::Relaxed),
                accepted.saturating_sub(last_accepted),
                shared.errors.load(Ordering::Relaxed),
            )
        } else {
            format!("[{t:>7.1}s] following {accepted}")
        };
        if let Some(s) = shared.latest() {
            let settled = s.settled();
            let _ = write!(
                line,
                " | backlog {}{} settled {settled} ({}/s)",
                s.backlog,
                if s.exact { "" } else { "~" },
                settled.saturating_sub(last_settled)
            );
            last_settled = settled;
        }
        last_accepted = accepted;
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: f64, accepted: u64, backlog: u64) -> Sample {
        Sample {
            at: Duration::from_secs_f64(at),
            accepted,
            backlog,
            exact: true,
        }
    }

    fn report(mode: Load, samples: Vec<Sample>, drained: f64) -> Report {
        let mut histogram = crate::run::new_histogram().unwrap();
        for us in [1_000u64, 2_000, 3_000, 50_000] {
            histogram.record(us).unwrap();
        }
        Report {
            mode,
            run_id: "abcd1234".into(),
            connections: 8,
            merchants: 1,
            tokens: "tok_visa=1".into(),
            mix: None,
            offered: 1_000,
            sent: 1_000,
            accepted: 998,
            errors: BTreeMap::from([("503".to_owned(), 2)]),
            accept_elapsed: Duration::from_secs(10),
            histogram: Some(histogram),
            max_lag: Duration::from_millis(3),
            follow: Some(FollowOutcome {
                samples,
                drained_at: Some(Duration::from_secs_f64(drained)),
                timed_out: false,
                requests: 42,
                failed_samples: 0,
            }),
            timeline: None,
            books: Some(Books::default()),
        }
    }

    fn field<'a>(line: &'a str, key: &str) -> &'a str {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("{key} missing in {line}"))
    }

    #[test]
    fn summary_line_is_greppable_key_values() {
        let samples = vec![
            sample(5.0, 500, 100),
            sample(10.0, 998, 498),
            sample(20.0, 998, 0),
        ];
        let r = report(Load::Closed { payments: 1_000 }, samples, 20.0);
        let f = r.figures();
        let line = r.summary_line(&f);
        assert!(
            line.starts_with("summary mode=closed run=abcd1234 "),
            "{line}"
        );
        assert!(line.split(' ').skip(1).all(|kv| {
            kv.split_once('=')
                .is_some_and(|(k, v)| !k.is_empty() && !v.is_empty())
        }));
        assert_eq!(field(&line, "accepted_per_s"), "99.8");
        assert_eq!(field(&line, "errors"), "2");
        assert_eq!(field(&line, "errors_by_status"), "503:2");
        assert_eq!(field(&line, "settled"), "998");
        // 500 settled by the end of the 10 s load, 998 by 20 s.
        assert_eq!(field(&line, "sustained_per_s"), "50.0");
        assert_eq!(field(&line, "settled_per_s"), "49.9");
        assert_eq!(field(&line, "settled_after_per_s"), "49.8");
        assert_eq!(field(&line, "timeline"), "samples");
        assert_eq!(field(&line, "backlog_flat"), "na");
        assert_eq!(field(&line, "books"), "ok");
        assert_eq!(field(&line, "max_lag_ms"), "na");
        assert_eq!(
            (field(&line, "missed"), field(&line, "kept_up")),
            ("0", "na")
        );
        assert_eq!(field(&line, "p50_ms"), "2.000");
        let human = r.human_line(&f);
        assert!(
            human.starts_with("accepted/s=100 p99_ms=50.02 settled/s=50 sustained/s=50 books=ok"),
            "{human}"
        );
        assert!(r.render().contains("latency p50 / p99 / p99.9"));
        assert!(r.success());
    }

    #[test]
    fn server_timeline_wins_over_samples() {
        let mut r = report(
            Load::Closed { payments: 1_000 },
            vec![sample(10.0, 998, 0)],
            10.0,
        );
        let start = 1_000_000_000_000;
        let times: Vec<i64> = (0..998).map(|i| start + i * 10_000).collect(); // last at 9.97 s
        r.timeline = Timeline::from_server_times(&times, start, r.accept_elapsed, 998);
        let f = r.figures();
        assert_eq!(f.timeline_source, Some("server"));
        assert_eq!(f.settled, Some(998));
        assert_eq!(num(f.last_terminal_s, 2), "9.97");
        assert_eq!(f.settled_after_per_s, None);
        // A stamp long before the start means another clock: not used.
        assert_eq!(
            Timeline::from_server_times(&[start - 5_000_000], start, r.accept_elapsed, 1),
            None
        );
    }

    #[test]
    fn open_loop_flatness() {
        let flat: Vec<Sample> = (0..=20)
            .map(|i| sample(i as f64 * 0.5, i * 500, 40 + (i % 3)))
            .collect();
        let r = report(
            Load::Open {
                rate: 1_000.0,
                duration: Duration::from_secs(10),
            },
            flat,
            10.5,
        );
        let f = r.figures();
        assert!(f.flatness.as_ref().unwrap().flat());
        assert_eq!(field(&r.summary_line(&f), "backlog_flat"), "yes");
        assert_eq!(field(&r.summary_line(&f), "kept_up"), "yes");

        let growing: Vec<Sample> = (0..=20)
            .map(|i| sample(i as f64 * 0.5, i * 500, i * 200))
            .collect();
        let r = report(
            Load::Open {
                rate: 1_000.0,
                duration: Duration::from_secs(10),
            },
            growing,
            30.0,
        );
        let r = Report {
            offered: 10_000,
            ..r
        };
        let f = r.figures();
        let fl = f.flatness.clone().unwrap();
        assert!(!fl.flat() && (fl.slope - 400.0).abs() < 1e-6, "{fl:?}");
        assert_eq!(field(&r.summary_line(&f), "backlog_flat"), "no");
        // 10,000 offered, 1,000 sent before the run stopped: the rest is missed.
        assert_eq!(field(&r.summary_line(&f), "missed"), "9000");
        assert_eq!(field(&r.summary_line(&f), "kept_up"), "no");
        assert!(r.render().contains("offered / missed"));
    }

    #[test]
    fn missing_figures_print_na_and_downsampling_keeps_the_ends() {
        assert_eq!(num(None, 2), "na");
        assert_eq!(num(Some(f64::NAN), 2), "na");
        let samples: Vec<Sample> = (0..100).map(|i| sample(i as f64, i, 0)).collect();
        let picked = downsample(&samples, 20);
        assert_eq!(picked.len(), 20);
        assert_eq!((picked[0].accepted, picked[19].accepted), (0, 99));
    }
}
