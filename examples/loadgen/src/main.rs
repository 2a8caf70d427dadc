//! `loadgen`: a load generator for a running Atomic server.
//!
//! It creates its own merchants with the platform key, sends payments over N HTTP/1.1
//! keep-alive connections (closed loop: M payments as fast as they are answered; open loop: a
//! fixed rate for a duration), records latency in an HDR histogram, follows settlement until
//! no payment is left open, and checks the books through the API. It prints a progress line
//! to stderr every second, and at the end a table, a human summary line and a machine line
//! starting with `summary `; with `--series FILE`, the load second by second as CSV.
//! `loadgen chart` draws bench/run's results and those series as one SVG. `loadgen --help`
//! lists the options.
//!
//! Module map: [`args`] parses the command line, [`client`] speaks the API, [`run`] drives the
//! load, [`mixed`] sends a mixed backlog of captures, refunds and charges, [`follow`] samples
//! the backlog, [`verify`] checks the books, [`report`] prints, [`series`] keeps the load per
//! second, [`chart`] draws.

mod args;
mod chart;
mod client;
mod follow;
mod mixed;
mod report;
mod run;
mod series;
mod verify;

use std::process::ExitCode;

use args::{ChartOptions, Invocation, Options};

fn main() -> ExitCode {
    match args::parse(std::env::args_os(), std::env::var("ATOMIC_KEY").ok()) {
        Ok(Invocation::Run(options)) => drive(&options),
        Ok(Invocation::Chart(options)) => draw(&options),
        // clap's own message: the help text (exit 0) or one error with the usage (exit 2).
        Err(error) => {
            let _ = error.print();
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
        }
    }
}

/// `loadgen chart`: draws the chart and says where it went.
fn draw(options: &ChartOptions) -> ExitCode {
    match chart::run(options) {
        Ok(done) => {
            eprintln!("loadgen chart: {done}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen chart: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A run against a server: prints its report; fails when the run could not be made or its
/// books or settlement went wrong.
fn drive(options: &Options) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(options)) {
        Ok(report) => {
            print!("{}", report.render());
            if report.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}
