//! `atomic-server`: the ready Atomic server. Configuration comes from the environment and a
//! `.env` file (see README); with no `DATABASE_URL` it runs on in-memory adapters and says so.
//! `atomic-server audit` checks the books of `DATABASE_URL` instead (exit 1 on any violation).

use std::process::ExitCode;
use std::time::Duration;

use atomic_server::{Application, LogFormat, Settings, audit_books, shutdown_signal, walkthrough};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
usage: atomic-server                  serve (configured by the environment; see README)
       atomic-server audit [--stuck-after SECONDS]
                                      check the books of DATABASE_URL (L1-L12) in one snapshot;
                                      prints each violation count, exits 1 if any is not 0
                                      (payments open longer than SECONDS, default 70, are stuck)";

/// What the command line asks for.
enum Command {
    Serve,
    Audit { stuck_after: Duration },
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    match args {
        [] => Ok(Command::Serve),
        [cmd, rest @ ..] if cmd == "audit" => {
            let mut stuck_after = Duration::from_secs(70);
            let mut rest = rest.iter();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--stuck-after" => {
                        let value = rest
                            .next()
                            .ok_or("--stuck-after needs a number of seconds")?;
                        let secs: u64 = value.parse().map_err(|_| {
                            format!("--stuck-after needs whole seconds, not {value:?}")
                        })?;
                        stuck_after = Duration::from_secs(secs);
                    }
                    other => return Err(format!("unknown argument {other:?}")),
                }
            }
            Ok(Command::Audit { stuck_after })
        }
        [cmd, ..] if cmd == "-h" || cmd == "--help" => Err(String::new()),
        [other, ..] => Err(format!("unknown command {other:?}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(command) => command,
        Err(why) => return refuse_command_line(&why),
    };
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("atomic-server: {error}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Audit { stuck_after } => audit(&settings, stuck_after).await,
        Command::Serve => serve(settings).await,
    }
}

/// Prints why the command line was refused, then the usage, to stderr. An empty `why` is a
/// request for help: usage only, exit 0; anything else exits 2.
fn refuse_command_line(why: &str) -> ExitCode {
    if !why.is_empty() {
        eprintln!("atomic-server: {why}");
    }
    eprintln!("{USAGE}");
    if why.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// Serves until SIGTERM or ctrl-c: exit 0 after a clean stop, 1 if the application cannot be
/// built or stops on an error.
async fn serve(settings: Settings) -> ExitCode {
    init_logging(&settings);
    // Fault-test builds only (the `failpoints` feature); a no-op in every other build.
    atomic_core::failpoint::arm(&settings.faults.failpoints);
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(error) => {
            eprintln!("atomic-server: {error}");
            return ExitCode::FAILURE;
        }
    };
    announce(&app);
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("atomic-server: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs where the server listens, its role, storage and metrics address; a process that
/// serves the API and minted the platform key also prints the walkthrough with that key.
fn announce(app: &Application) {
    tracing::info!(
        address = %app.address(),
        role = app.role().as_str(),
        storage = app.storage(),
        metrics = %app
            .metrics_address()
            .map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics")),
        "atomic-server listening"
    );
    if let Some(key) = app
        .minted_platform_key()
        .filter(|_| app.role().serves_api())
    {
        // Printed, never logged: the raw key must not reach log files.
        println!("{}", walkthrough(app.address(), key));
    }
}

/// `atomic-server audit`: prints every invariant with its violation count.
async fn audit(settings: &Settings, stuck_after: Duration) -> ExitCode {
    match audit_books(settings, stuck_after).await {
        Ok(report) => {
            print!("{report}");
            println!(
                "L11  every 202 durable                  (checked against a client's history)"
            );
            if report.is_clean() {
                println!("books: clean");
                ExitCode::SUCCESS
            } else {
                println!("books: VIOLATED");
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("atomic-server audit: {error}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(settings: &Settings) {
    let filter =
        EnvFilter::try_new(&settings.log.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.compact().init(),
    }
}
