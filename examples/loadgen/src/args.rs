//! Command-line options: a small `--name value` / `--name=value` parser (no parser crate), the
//! token mix and durations. Everything here is pure, so it is unit-tested without a server.

use std::fmt;
use std::time::Duration;

/// The usage text printed by `--help` and after a bad option.
pub(crate) const USAGE: &str = "\
loadgen: drive a running Atomic server and check its books

USAGE:
  loadgen [OPTIONS]                       closed loop: --payments M over --connections N
  loadgen --rate R --duration S [OPTIONS] open loop: R payments/s for S seconds
  loadgen --follow-only [OPTIONS]         follow settlement of payments already in the server
  loadgen --mixed-backlog [OPTIONS]       capture every AUTHORIZED payment, refund half of every
                                          SUCCESS one, and send --payments new charges

OPTIONS:
  --url URL              server base URL (default http://127.0.0.1:3000)
  --key KEY              platform API key (default: env ATOMIC_KEY)
  --connections N        HTTP/1.1 keep-alive connections (default 32)
  --payments M           payments to send in closed loop (default 20000)
  --merchants K          merchants to spread payments over; 1 = one hot merchant (default 1)
  --rate R               open loop: payments per second (needs --duration)
  --duration S           open loop: how long to send, e.g. 60 or 60s or 2m
  --tokens MIX           card token mix, token=weight,... (default tok_visa=90,tok_chargeDeclined=10)
  --manual PCT           percent of payments sent with captureMethod manual, spread evenly
                         (default 0; above 0 skips the books check, which knows automatic only)
  --currency CODE        currency of merchants and payments (default USD)
  --follow-timeout D     give up following settlement after D once sending ends (default 300s)
  --poll-interval D      settlement sampling period (default 500ms)
  --poll-budget N        most list requests per sample for exact backlog counts (default 20)
  --timeout D            per-request timeout (default 30s)
  --threads N            runtime worker threads (default 2)
  --no-follow            send only; do not follow settlement (implies --no-verify)
  --follow-only          send nothing; follow every open payment the platform key sees
  --follow-refunds       with --follow-only: follow the open refunds too
  --no-verify            skip the books check
  -h, --help             this text

Durations are seconds or a number with ms, s, m or h.";

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
}

/// What the command line asked for.
#[derive(Debug)]
pub(crate) enum Command {
    /// Print the usage text.
    Help,
    /// Run with these options.
    Run(Box<Options>),
}

/// A command-line error, shown with the usage text.
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

/// Parses the arguments (without the program name); `env_key` is `ATOMIC_KEY` if set.
pub(crate) fn parse<I>(args: I, env_key: Option<String>) -> Result<Command, ArgError>
where
    I: IntoIterator<Item = String>,
{
    let mut url = String::from("http://127.0.0.1:3000");
    let mut key = env_key.filter(|k| !k.is_empty());
    let mut connections = 32usize;
    let mut payments: Option<u64> = None;
    let mut merchants = 1usize;
    let mut rate: Option<f64> = None;
    let mut duration: Option<Duration> = None;
    let mut tokens = TokenMix::parse("tok_visa=90,tok_chargeDeclined=10")?;
    let mut manual_percent = 0u64;
    let mut currency = String::from("USD");
    let mut follow_timeout = Duration::from_secs(300);
    let mut poll_interval = Duration::from_millis(500);
    let mut poll_budget = 20usize;
    let mut timeout = Duration::from_secs(30);
    let mut threads = 2usize;
    let mut no_follow = false;
    let mut follow_only = false;
    let mut no_verify = false;
    let mut follow_refunds = false;
    let mut mixed = false;

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let flag = |on: &mut bool| match &inline {
            Some(_) => err(format!("{name} takes no value")),
            None => {
                *on = true;
                Ok(())
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--no-follow" => flag(&mut no_follow)?,
            "--follow-only" => flag(&mut follow_only)?,
            "--no-verify" => flag(&mut no_verify)?,
            "--follow-refunds" => flag(&mut follow_refunds)?,
            "--mixed-backlog" => flag(&mut mixed)?,
            _ => {
                let value = match inline {
                    Some(v) => v,
                    None => match args.next() {
                        Some(v) => v,
                        None => return err(format!("{name} needs a value")),
                    },
                };
                match name.as_str() {
                    "--url" => url = value.trim_end_matches('/').to_owned(),
                    "--key" => key = Some(value),
                    "--connections" => connections = positive(&name, &value)?,
                    "--payments" => payments = Some(positive(&name, &value)?),
                    "--merchants" => merchants = positive(&name, &value)?,
                    "--rate" => rate = Some(positive_f64(&name, &value)?),
                    "--duration" => duration = Some(nonzero_duration(&name, &value)?),
                    "--tokens" => tokens = TokenMix::parse(&value)?,
                    "--manual" => manual_percent = percent(&name, &value)?,
                    "--currency" => currency = value.to_ascii_uppercase(),
                    "--follow-timeout" => follow_timeout = nonzero_duration(&name, &value)?,
                    "--poll-interval" => poll_interval = nonzero_duration(&name, &value)?,
                    "--poll-budget" => poll_budget = positive(&name, &value)?,
                    "--timeout" => timeout = nonzero_duration(&name, &value)?,
                    "--threads" => threads = positive(&name, &value)?,
                    _ => return err(format!("unknown option {name}")),
                }
            }
        }
    }

    let Some(key) = key else {
        return err("no API key: pass --key or set ATOMIC_KEY (the server prints it at start-up)");
    };
    if !url.starts_with("http://") {
        return err("--url must start with http:// (this build speaks plain HTTP/1.1)");
    }
    if mixed && (follow_only || rate.is_some() || duration.is_some()) {
        return err("--mixed-backlog is a closed loop: drop --follow-only, --rate, --duration");
    }
    if follow_refunds && !follow_only {
        return err("--follow-refunds goes with --follow-only");
    }
    let load = match (follow_only, rate, duration, payments) {
        _ if mixed => Load::Mixed {
            charges: payments.unwrap_or(20_000),
        },
        (true, None, None, None) => Load::FollowOnly,
        (true, ..) => {
            return err("--follow-only sends nothing: drop --rate, --duration, --payments");
        }
        (false, Some(rate), Some(duration), None) => Load::Open { rate, duration },
        (false, Some(_), Some(_), Some(_)) => {
            return err("--payments is for the closed loop; the open loop sends rate x duration");
        }
        (false, Some(_), None, _) | (false, None, Some(_), _) => {
            return err("the open loop needs both --rate and --duration");
        }
        (false, None, None, payments) => Load::Closed {
            payments: payments.unwrap_or(20_000),
        },
    };
    if follow_only && no_follow {
        return err("--follow-only and --no-follow exclude each other");
    }
    Ok(Command::Run(Box::new(Options {
        url,
        key,
        connections,
        merchants,
        load,
        tokens,
        currency,
        follow_timeout,
        poll_interval,
        poll_budget,
        timeout,
        threads,
        follow: !no_follow,
        // The books check knows automatic capture only (a manual payment ends AUTHORIZED).
        verify: !no_verify && !no_follow && !follow_only && !mixed && manual_percent == 0,
        manual_percent,
        follow_refunds,
    })))
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(
    name: &str,
    value: &str,
) -> Result<T, ArgError> {
    match value.trim().replace('_', "").parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => err(format!(
            "{name} needs a positive whole number, not {value:?}"
        )),
    }
}

fn percent(name: &str, value: &str) -> Result<u64, ArgError> {
    match value.trim().parse::<u64>() {
        Ok(n) if n <= 100 => Ok(n),
        _ => err(format!(
            "{name} needs a whole percent 0..=100, not {value:?}"
        )),
    }
}

fn positive_f64(name: &str, value: &str) -> Result<f64, ArgError> {
    match value.trim().replace('_', "").parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => err(format!("{name} needs a positive number, not {value:?}")),
    }
}

fn nonzero_duration(name: &str, value: &str) -> Result<Duration, ArgError> {
    match parse_duration(value) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => err(format!(
            "{name} needs a duration such as 30, 30s, 500ms or 2m, not {value:?}"
        )),
    }
}

/// Parses `30`, `30s`, `500ms`, `2m`, `1h`, `1.5s` (seconds when there is no unit).
pub(crate) fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1_000.0,
        "m" => number * 60.0,
        "h" => number * 3_600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
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
                    Err(_) => return err(format!("--tokens: bad weight in {part:?}")),
                },
                None => (part, 1),
            };
            if !token.starts_with("tok_") {
                return err(format!("--tokens: {token:?} is not a card token (tok_...)"));
            }
            if entries.iter().any(|(t, _)| t == token) {
                return err(format!("--tokens: {token} is listed twice"));
            }
            if weight > 0 {
                entries.push((token.to_owned(), weight));
            }
        }
        let total = entries.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return err("--tokens: give at least one token a positive weight");
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

    fn run(args: &[&str]) -> Result<Options, ArgError> {
        match parse(args.iter().map(|s| s.to_string()), Some("sk_env".into()))? {
            Command::Run(o) => Ok(*o),
            Command::Help => err("help"),
        }
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
        let no_key = parse(Vec::<String>::new(), None).unwrap_err();
        assert!(no_key.0.contains("ATOMIC_KEY"));
        assert!(matches!(
            parse(vec!["-h".to_string()], None),
            Ok(Command::Help)
        ));
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
    fn durations() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5d"), None);
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
