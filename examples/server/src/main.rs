//! `atomic-server`: the ready Atomic server. Configuration comes from the environment and a
//! `.env` file (see README); with no `DATABASE_URL` it runs on in-memory adapters and says so.

use std::process::ExitCode;

use atomic_server::{Application, LogFormat, Settings, shutdown_signal, walkthrough};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("atomic-server: {error}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&settings);
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(error) => {
            eprintln!("atomic-server: {error}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        address = %app.address(),
        role = app.role().as_str(),
        storage = app.storage(),
        "atomic-server listening"
    );
    if let Some(key) = app
        .minted_platform_key()
        .filter(|_| app.role().serves_api())
    {
        // Printed, never logged: the raw key must not reach log files.
        println!("{}", walkthrough(app.address(), key));
    }
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

fn init_logging(settings: &Settings) {
    let filter =
        EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.compact().init(),
    }
}
