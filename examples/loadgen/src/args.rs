//! Command-line options: parsed by `clap` (derive), then checked and folded into [`Options`]
//! (a run) or [`ChartOptions`] (`loadgen chart`); the token mix and durations. Everything here is pure, so it is unit-tested without a server.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

/// The five ways to run, shown as the usage line of `--help` and of every error.
const USAGE: &str = "\
loadgen [OPTIONS]                       closed loop: --payments M over --connections N
       loadgen --rate R --duration S [OPTIONS] open loop: R payments/s for S seconds
       loadgen --follow-only [OPTIONS]         follow settlement of payments already in the server
       loadgen --mixed-backlog [OPTIONS]       capture every AUTHORIZED payment, refund half of every
                                               SUCCESS one, and send --payments new charges
       loadgen chart --results FILE [--series NAME=FILE]... --out FILE
                                               draw bench/run's results as one SVG";

/// The command line as clap sees it; [`parse`] turns it into [`Options`].
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "loadgen: drive a running Atomic server and check its books",
    override_usage = USAGE,
    after_help = "Durations are seconds (60, 1.5) or humantime: 500ms, 30s, 2m, 1h, 1d, 1h 30m.",
    args_override_self = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Server base URL
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3000", value_parser = http_url)]
    url: String,
    /// Platform API key [default: env ATOMIC_KEY]
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// HTTP/1.1 keep-alive connections
    #[arg(long, value_name = "N", default_value = "32", value_parser = positive::<usize>)]
    connections: usize,
    /// Payments to send in closed loop (or new charges with --mixed-backlog) [default: 20000]
    #[arg(long, value_name = "M", value_parser = positive::<u64>, conflicts_with_all = ["rate", "duration"])]
    payments: Option<u64>,
    /// Merchants to spread payments over; 1 = one hot merchant
    #[arg(long, value_name = "K", default_value = "1", value_parser = positive::<usize>)]
    merchants: usize,
    /// Open loop: payments per second
    #[arg(long, value_name = "R", value_parser = positive_f64, requires = "duration")]
    rate: Option<f64>,
    /// Open loop: how long to send, e.g. 60 or 60s or 2m
    #[arg(long, value_name = "S", value_parser = nonzero_duration, requires = "rate")]
    duration: Option<Duration>,
    /// Card token mix, token=weight,...
    #[arg(long, value_name = "MIX", default_value = "tok_visa=90,tok_chargeDeclined=10", value_parser = TokenMix::parse)]
    tokens: TokenMix,
    /// Percent of payments sent with captureMethod manual, spread evenly; above 0 skips the books check
    #[arg(long = "manual", value_name = "PCT", default_value = "0", value_parser = clap::value_parser!(u64).range(0..=100))]
    manual_percent: u64,
    /// Currency of merchants and payments
    #[arg(long, value_name = "CODE", default_value = "USD", value_parser = upper_case)]
    currency: String,
    /// Give up following settlement after D once sending ends
    #[arg(long, value_name = "D", default_value = "300s", value_parser = nonzero_duration)]
    follow_timeout: Duration,
    /// Settlement sampling period
    #[arg(long, value_name = "D", default_value = "500ms", value_parser = nonzero_duration)]
    poll_interval: Duration,
    /// Most list requests per sample for exact backlog counts
    #[arg(long, value_name = "N", default_value = "20", value_parser = positive::<usize>)]
    poll_budget: usize,
    /// Per-request timeout
    #[arg(long, value_name = "D", default_value = "30s", value_parser = nonzero_duration)]
    timeout: Duration,
    /// Runtime worker threads
    #[arg(long, value_name = "N", default_value = "2", value_parser = positive::<usize>)]
    threads: usize,
    /// Send only; do not follow settlement (implies --no-verify)
    #[arg(long)]
    no_follow: bool,
    /// Send nothing; follow every open payment the platform key sees
    #[arg(long, conflicts_with_all = ["rate", "duration", "payments", "no_follow"])]
    follow_only: bool,
    /// With --follow-only: follow the open refunds too
    #[arg(long, requires = "follow_only")]
    follow_refunds: bool,
    /// Skip the books check
    #[arg(long)]
    no_verify: bool,
    /// Capture every AUTHORIZED payment, refund half of every SUCCESS one, send --payments new charges
    #[arg(long, conflicts_with_all = ["follow_only", "rate", "duration"])]
    mixed_backlog: bool,
    /// Write the load second by second (offered/s, accepted/s, p99 ms, backlog) to FILE as CSV
    #[arg(long, value_name = "FILE", conflicts_with_all = ["follow_only", "mixed_backlog"])]
    series: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What `loadgen` does instead of a run.
#[derive(Debug, Subcommand)]
enum Command {
    /// Draw bench/run's results as one SVG: the series over time and every figure in bars
    #[command(override_usage = "loadgen chart --results FILE [--series NAME=FILE]... --out FILE")]
    Chart {
        /// bench/run's results file: its header and last `summary ` line
        #[arg(long, value_name = "FILE")]
        results: PathBuf,
        /// A CSV written by --series, drawn in a panel titled NAME (repeat for more)
        #[arg(long = "series", value_name = "NAME=FILE", value_parser = named_file)]
        series: Vec<(String, PathBuf)>,
        /// Where to write the SVG
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Invocation {
    /// A run against a server.
    Run(Box<Options>),
    /// `loadgen chart`: draw a results file and its series.
    Chart(ChartOptions),
}

/// `loadgen chart`'s options.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChartOptions {
    /// bench/run's results file.
    pub(crate) results: PathBuf,
    /// The per-second series, each with its panel's title, in the order given.
    pub(crate) series: Vec<(String, PathBuf)>,
    /// The SVG to write.
    pub(crate) out: PathBuf,
}

/// How payments are offered to the server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Load {
    /// As fast as the connections allow: `payments` in total.
    Closed {
        /// Payments to send.
        payments: u64,
    },
    /// A fixed schedule: `rate` per second for `duration`, whatever the responses do.
    Open {
        /// Payments per second.
        rate: f64,
        /// How long to send.
        duration: Duration,
    },
    /// Send nothing; follow the payments already open in the server.
    FollowOnly,
    /// Capture every `AUTHORIZED` payment, refund part of every `SUCCESS` one (all that the
    /// platform key sees), and send `charges` new payments, all interleaved.
    Mixed {
        /// New payments to send besides the captures and refunds.
        charges: u64,
    },
}

impl Load {
    /// Payments this load will send (0 for follow-only).
    pub(crate) fn total(&self) -> u64 {
        match *self {
            Load::Closed { payments } => payments,
            // Rounded to the nearest whole payment; at least one for any positive schedule.
            Load::Open { rate, duration } => {
                (rate * duration.as_secs_f64()).round().max(1.0) as u64
            }
            Load::FollowOnly => 0,
            Load::Mixed { charges } => charges,
        }
    }

    /// A short name for reports: `closed`, `open` or `follow`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Load::Closed { .. } => "closed",
            Load::Open { .. } => "open",
            Load::FollowOnly => "follow",
            Load::Mixed { .. } => "mixed",
        }
    }
}

/// Everything the run needs, parsed and checked.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Base URL without the `/api/v1` suffix and without a trailing slash.
    pub(crate) url: String,
    /// The platform API key.
    pub(crate) key: String,
    /// Concurrent connections (closed and open loop).
    pub(crate) connections: usize,
    /// Number of merchants payments are spread over.
    pub(crate) merchants: usize,
    /// What load to offer.
    pub(crate) load: Load,
    /// Which card tokens, in what proportion.
    pub(crate) tokens: TokenMix,
    /// Percent of payments sent with manual capture (0..=100).
    pub(crate) manual_percent: u64,
    /// Currency code of merchants and payments.
    pub(crate) currency: String,
    /// How long to keep following settlement once sending has ended.
    pub(crate) follow_timeout: Duration,
    /// Sampling period while following.
    pub(crate) poll_interval: Duration,
    /// Most list requests one sample may spend counting the backlog exactly.
    pub(crate) poll_budget: usize,
    /// Per-request timeout.
    pub(crate) timeout: Duration,
    /// Tokio worker threads.
    pub(crate) threads: usize,
    /// Follow settlement after sending.
    pub(crate) follow: bool,
    /// Check the books after settlement.
    pub(crate) verify: bool,
    /// Follow-only: follow the open refunds as well as the open payments.
    pub(crate) follow_refunds: bool,
    /// Closed or open loop: where to write the per-second series.
    pub(crate) series: Option<PathBuf>,
}

/// A token-mix error, shown by clap as the reason `--tokens` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArgError(pub(crate) String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

fn err<T>(message: impl Into<String>) -> Result<T, ArgError> {
    Err(ArgError(message.into()))
}

/// Parses the arguments (the program name first); `env_key` is `ATOMIC_KEY` if set (a run needs
/// a key, `chart` does not). `--help` comes back as an error of kind `DisplayHelp`: `print` it
/// and exit with its `exit_code`.
pub(crate) fn parse<I, T>(args: I, env_key: Option<String>) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cli = Cli::try_parse_from(args)?;
    if let Some(Command::Chart {
        results,
        series,
        out,
    }) = cli.command.take()
    {
        return Ok(Invocation::Chart(ChartOptions {
            results,
            series,
            out,
        }));
    }
    let Some(key) = cli.key.clone().or(env_key).filter(|k| !k.is_empty()) else {
        return Err(Cli::command().error(
            ErrorKind::MissingRequiredArgument,
            "no API key: pass --key or set ATOMIC_KEY (the server prints it at start-up)",
        ));
    };
    Ok(Invocation::Run(Box::new(options(cli, key))))
}

/// Folds a parsed command line (its exclusions already checked by clap) into [`Options`].
fn options(cli: Cli, key: String) -> Options {
    let load = match (cli.rate, cli.duration) {
        _ if cli.mixed_backlog => Load::Mixed {
            charges: cli.payments.unwrap_or(20_000),
        },
        _ if cli.follow_only => Load::FollowOnly,
        (Some(rate), Some(duration)) => Load::Open { rate, duration },
        _ => Load::Closed {
            payments: cli.payments.unwrap_or(20_000),
        },
    };
    // The books check knows automatic capture only (a manual payment ends AUTHORIZED).
    let verify = !cli.no_verify
        && !cli.no_follow
        && !cli.follow_only
        && !cli.mixed_backlog
        && cli.manual_percent == 0;
    Options {
        url: cli.url,
        key,
        connections: cli.connections,
        merchants: cli.merchants,
        load,
        tokens: cli.tokens,
        manual_percent: cli.manual_percent,
        currency: cli.currency,
        follow_timeout: cli.follow_timeout,
        poll_interval: cli.poll_interval,
        poll_budget: cli.poll_budget,
        timeout: cli.timeout,
        threads: cli.threads,
        follow: !cli.no_follow,
        verify,
        follow_refunds: cli.follow_refunds,
        series: cli.series,
    }
}

/// `--series NAME=FILE` of `chart`: split at the first `=`, both sides non-empty.
fn named_file(value: &str) -> Result<(String, PathBuf), String> {
    match value.split_once('=') {
        Some((name, file)) if !name.trim().is_empty() && !file.is_empty() => {
            Ok((name.trim().to_owned(), PathBuf::from(file)))
        }
        _ => Err("needs NAME=FILE, e.g. \"S3 at 4000/s=/tmp/s3.csv\"".into()),
    }
}

/// `--url`: plain `http://` only (this build speaks HTTP/1.1 without TLS), no trailing slash.
fn http_url(value: &str) -> Result<String, String> {
    if !value.starts_with("http://") {
        return Err("must start with http:// (this build speaks plain HTTP/1.1)".into());
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn upper_case(value: &str) -> Result<String, String> {
    Ok(value.to_ascii_uppercase())
}

/// A whole number above zero; `_` may group digits (`20_000`).
fn positive<T: std::str::FromStr + PartialOrd + Default>(value: &str) -> Result<T, String> {
    match value.trim().replace('_', "").parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err("needs a positive whole number".into()),
    }
}

fn positive_f64(value: &str) -> Result<f64, String> {
    match value.trim().replace('_', "").parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err("needs a positive number".into()),
    }
}

/// A duration above zero, with humantime's reason when it is not one.
fn nonzero_duration(value: &str) -> Result<Duration, String> {
    match parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("needs a duration above zero".into()),
        Err(error) => Err(format!("{error} (e.g. 30, 30s, 500ms, 2m)")),
    }
}

/// Parses a duration with `humantime` (`500ms`, `30s`, `2m`, `1h`, `1d`, `1.5s`, `1h 30m`),
/// plus a bare number of seconds (`60`, `1.5`), which humantime refuses ("time unit needed")
/// but bench/run passes (`--duration "$S3_SECONDS"`) and earlier versions accepted.
pub(crate) fn parse_duration(value: &str) -> Result<Duration, humantime::DurationError> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return humantime::parse_duration(&format!("{value}s"));
    }
    humantime::parse_duration(value)
}

/// Card tokens the server declines (API.md): every other `tok_*` settles as SUCCESS.
const DECLINING: [&str; 3] = [
    "tok_chargeDeclined",
    "tok_chargeDeclinedInsufficientFunds",
    "tok_chargeDeclinedProcessingError",
];

/// Whether a payment with this card token is expected to end `SUCCESS`.
pub(crate) fn token_succeeds(token: &str) -> bool {
    !DECLINING.contains(&token)
}

/// A weighted mix of card tokens, e.g. `tok_visa=90,tok_chargeDeclined=10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenMix {
    entries: Vec<(String, u32)>,
    total: u64,
}

impl TokenMix {
    /// Parses `token=weight,...`; a token without `=weight` weighs 1.
    pub(crate) fn parse(spec: &str) -> Result<TokenMix, ArgError> {
        let mut entries: Vec<(String, u32)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (token, weight) = match part.split_once('=') {
                Some((t, w)) => match w.trim().parse::<u32>() {
                    Ok(w) => (t.trim(), w),
                    Err(_) => return err(format!("bad weight in {part:?}")),
                },
                None => (part, 1),
            };
            if !token.starts_with("tok_") {
                return err(format!("{token:?} is not a card token (tok_...)"));
            }
            if entries.iter().any(|(t, _)| t == token) {
                return err(format!("{token} is listed twice"));
            }
            if weight > 0 {
                entries.push((token.to_owned(), weight));
            }
        }
        let total = entries.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return err("give at least one token a positive weight");
        }
        Ok(TokenMix { entries, total })
    }

    /// The token of payment number `index` in a run seeded with `seed`: a deterministic,
    /// well-mixed draw, so every stretch of the run has about the configured proportions.
    pub(crate) fn pick(&self, seed: u64, index: u64) -> &str {
        let mut point = splitmix64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % self.total;
        for (token, weight) in &self.entries {
            if point < u64::from(*weight) {
                return token;
            }
            point -= u64::from(*weight);
        }
        // Unreachable: point < total = the sum of the weights.
        &self.entries[self.entries.len() - 1].0
    }

    /// `token=weight,...` as given (weights of 0 dropped).
    pub(crate) fn describe(&self) -> String {
        self.entries
            .iter()
            .map(|(t, w)| format!("{t}={w}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Whether payment number `index` is sent with manual capture when `percent` of them are:
/// exactly `floor(n * percent / 100)` of the first `n`, evenly spread.
pub(crate) fn is_manual(percent: u64, index: u64) -> bool {
    (index + 1) * percent / 100 != index * percent / 100
}

/// SplitMix64: a tiny, good-quality mixer for deterministic per-payment choices.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `args` as the command line after the program name, with `ATOMIC_KEY=sk_env`.
    fn run(args: &[&str]) -> Result<Options, clap::Error> {
        parse_run(
            std::iter::once("loadgen").chain(args.iter().copied()),
            Some("sk_env".into()),
        )
    }

    /// [`parse`], expecting a run.
    fn parse_run<'a>(
        args: impl IntoIterator<Item = &'a str>,
        env_key: Option<String>,
    ) -> Result<Options, clap::Error> {
        match parse(args, env_key)? {
            Invocation::Run(options) => Ok(*options),
            Invocation::Chart(chart) => panic!("a run was expected, not {chart:?}"),
        }
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_a_closed_loop_of_20000_over_32_connections() {
        let o = run(&[]).unwrap();
        assert_eq!(o.load, Load::Closed { payments: 20_000 });
        assert_eq!(
            (o.connections, o.merchants, o.key.as_str()),
            (32, 1, "sk_env")
        );
        assert_eq!(o.url, "http://127.0.0.1:3000");
        assert!(o.follow && o.verify);
        assert_eq!(o.tokens.describe(), "tok_visa=90,tok_chargeDeclined=10");
    }

    #[test]
    fn both_value_forms_and_flags() {
        let o = run(&[
            "--url=http://h:1/",
            "--key",
            "sk_x",
            "--connections",
            "8",
            "--payments=2_000",
            "--merchants",
            "4",
            "--tokens",
            "tok_visa",
            "--follow-timeout",
            "2m",
            "--no-verify",
        ])
        .unwrap();
        assert_eq!(o.url, "http://h:1");
        assert_eq!(o.key, "sk_x");
        assert_eq!((o.connections, o.merchants), (8, 4));
        assert_eq!(o.load, Load::Closed { payments: 2_000 });
        assert_eq!(o.follow_timeout, Duration::from_secs(120));
        assert!(o.follow && !o.verify);
    }

    #[test]
    fn open_loop_needs_rate_and_duration() {
        let o = run(&["--rate", "1000", "--duration", "10s"]).unwrap();
        assert_eq!(o.load.total(), 10_000);
        assert_eq!(o.load.name(), "open");
        assert!(run(&["--rate", "1000"]).is_err());
        assert!(run(&["--duration", "10"]).is_err());
        assert!(run(&["--rate", "10", "--duration", "1", "--payments", "5"]).is_err());
    }

    #[test]
    fn follow_only_and_no_follow() {
        let o = run(&["--follow-only"]).unwrap();
        assert_eq!(o.load, Load::FollowOnly);
        assert!(!o.verify);
        let o = run(&["--no-follow"]).unwrap();
        assert!(!o.follow && !o.verify);
        assert!(run(&["--follow-only", "--payments", "5"]).is_err());
        assert!(run(&["--follow-only", "--no-follow"]).is_err());
    }

    #[test]
    fn bad_input_is_refused_with_a_message() {
        for bad in [
            &["--connections", "0"][..],
            &["--connections", "x"],
            &["--payments"],
            &["--rate", "-1", "--duration", "1"],
            &["--duration", "1x", "--rate", "1"],
            &["--bogus", "1"],
            &["--no-verify=yes"],
            &["--url", "https://x"],
            &["--tokens", "visa=1"],
            &["--tokens", "tok_visa=0"],
            &["--tokens", "tok_visa=1,tok_visa=2"],
        ] {
            assert!(run(bad).is_err(), "{bad:?}");
        }
        let no_key = parse(["loadgen"], None).unwrap_err();
        assert_eq!(no_key.kind(), ErrorKind::MissingRequiredArgument);
        assert!(no_key.to_string().contains("ATOMIC_KEY"), "{no_key}");
        assert_eq!(no_key.exit_code(), 2);
        // An empty ATOMIC_KEY counts as unset; --key wins over the environment.
        assert!(parse(["loadgen"], Some(String::new())).is_err());
        let o = parse_run(["loadgen", "--key", "sk_flag"], Some("sk_env".into())).unwrap();
        assert_eq!(o.key, "sk_flag");
        let bad = run(&["--connections", "0"]).unwrap_err();
        assert!(bad.to_string().contains("--connections"), "{bad}");
        assert_eq!(bad.exit_code(), 2);
    }

    #[test]
    fn help_is_not_an_error_and_lists_every_option() {
        for flag in ["-h", "--help"] {
            let help = parse(["loadgen", flag], None).unwrap_err();
            assert_eq!(help.kind(), ErrorKind::DisplayHelp);
            assert_eq!(help.exit_code(), 0);
        }
        let help = Cli::command().render_help().to_string();
        for option in [
            "--url",
            "--key",
            "--connections",
            "--payments",
            "--merchants",
            "--rate",
            "--duration",
            "--tokens",
            "--manual",
            "--currency",
            "--follow-timeout",
            "--poll-interval",
            "--poll-budget",
            "--timeout",
            "--threads",
            "--no-follow",
            "--follow-only",
            "--follow-refunds",
            "--no-verify",
            "--mixed-backlog",
            "--series",
            "chart --results",
            "ATOMIC_KEY",
        ] {
            assert!(help.contains(option), "{option} missing from:\n{help}");
        }
    }

    #[test]
    fn a_repeated_option_takes_its_last_value() {
        let o = run(&[
            "--connections",
            "4",
            "--connections=8",
            "--no-verify",
            "--no-verify",
        ]);
        assert_eq!(o.unwrap().connections, 8);
    }

    #[test]
    fn mixed_backlog_and_manual_share() {
        let o = run(&["--mixed-backlog", "--payments", "1600", "--manual", "50"]).unwrap();
        assert_eq!(o.load, Load::Mixed { charges: 1_600 });
        assert_eq!((o.load.name(), o.manual_percent), ("mixed", 50));
        assert!(run(&["--mixed-backlog", "--follow-only"]).is_err());
        assert!(run(&["--mixed-backlog", "--rate", "1", "--duration", "1"]).is_err());
        assert!(run(&["--manual", "101"]).is_err());
        let o = run(&["--follow-only", "--follow-refunds"]).unwrap();
        assert!(o.follow_refunds);
        assert!(run(&["--follow-refunds"]).is_err());
        for (percent, n, want) in [(50, 4_000, 2_000), (0, 10, 0), (100, 7, 7), (10, 95, 9)] {
            let manual = (0..n).filter(|i| is_manual(percent, *i)).count();
            assert_eq!(manual, want, "{percent}% of {n}");
        }
    }

    #[test]
    fn series_goes_with_a_closed_or_open_loop() {
        let o = run(&["--rate", "200", "--duration", "5", "--series", "/tmp/s.csv"]).unwrap();
        assert_eq!(o.series, Some(PathBuf::from("/tmp/s.csv")));
        assert_eq!(run(&[]).unwrap().series, None);
        assert!(run(&["--follow-only", "--series", "x"]).is_err());
        assert!(run(&["--mixed-backlog", "--series", "x"]).is_err());
    }

    #[test]
    fn chart_needs_no_key_and_takes_named_series() {
        let chart = parse(
            [
                "loadgen",
                "chart",
                "--results",
                "bench/last-run.txt",
                "--series",
                "S3 at 4000/s=/tmp/s3.csv",
                "--series=carried=/tmp/a=b.csv",
                "--out",
                "bench/last-run.svg",
            ],
            None,
        )
        .unwrap();
        let Invocation::Chart(chart) = chart else {
            panic!("{chart:?}");
        };
        assert_eq!(chart.results, PathBuf::from("bench/last-run.txt"));
        assert_eq!(
            chart.series,
            [
                ("S3 at 4000/s".to_owned(), PathBuf::from("/tmp/s3.csv")),
                ("carried".to_owned(), PathBuf::from("/tmp/a=b.csv")),
            ]
        );
        assert_eq!(chart.out, PathBuf::from("bench/last-run.svg"));
        let bare = ["loadgen", "chart", "--results", "r", "--out", "o"];
        assert!(matches!(parse(bare, None), Ok(Invocation::Chart(c)) if c.series.is_empty()));
        for bad in [
            &["chart", "--results", "r"][..],
            &["chart", "--out", "o"],
            &[
                "chart",
                "--results",
                "r",
                "--out",
                "o",
                "--series",
                "noequals",
            ],
            &["chart", "--results", "r", "--out", "o", "--series", "=f"],
            &[
                "--rate",
                "1",
                "--duration",
                "1",
                "chart",
                "--results",
                "r",
                "--out",
                "o",
            ],
        ] {
            let args = std::iter::once("loadgen").chain(bad.iter().copied());
            assert!(parse(args, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        let ok = |v: &str| parse_duration(v).ok();
        // Bare numbers are seconds (kept by hand: humantime wants a unit).
        assert_eq!(ok("30"), Some(Duration::from_secs(30)));
        assert_eq!(ok(" 60 "), Some(Duration::from_secs(60)));
        assert_eq!(ok("1.5"), Some(Duration::from_millis(1_500)));
        assert_eq!(ok("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(ok("1.5s"), Some(Duration::from_millis(1_500)));
        assert_eq!(ok("2m"), Some(Duration::from_secs(120)));
        assert_eq!(ok("1h"), Some(Duration::from_secs(3_600)));
        assert_eq!(ok("5d"), Some(Duration::from_secs(5 * 86_400)));
        assert_eq!(ok("1h 30m"), Some(Duration::from_secs(5_400)));
        for bad in ["", "s", ".", "1x", "-1s", "1.2.3"] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
        let error = run(&["--timeout", "3x"]).unwrap_err().to_string();
        assert!(
            error.contains("--timeout") && error.contains("unknown time unit"),
            "{error}"
        );
        assert!(run(&["--poll-interval", "0ms"]).is_err());
    }

    #[test]
    fn token_mix_keeps_its_proportions() {
        let mix = TokenMix::parse("tok_visa=90, tok_chargeDeclined=10,tok_amex=0").unwrap();
        assert_eq!(mix.describe(), "tok_visa=90,tok_chargeDeclined=10");
        let declined = (0..100_000)
            .filter(|i| mix.pick(42, *i) == "tok_chargeDeclined")
            .count();
        assert!((9_000..11_000).contains(&declined), "{declined}");
        // Deterministic for a seed.
        assert_eq!(mix.pick(7, 123), mix.pick(7, 123));
        assert!(token_succeeds("tok_visa") && token_succeeds("tok_amex"));
        assert!(!token_succeeds("tok_chargeDeclinedProcessingError"));
    }
}
