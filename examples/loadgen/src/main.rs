//! `loadgen`: a load generator for a running Atomic server.
//!
//! It creates its own merchants with the platform key, sends payments over N HTTP/1.1
//! keep-alive connections (closed loop: M payments as fast as they are answered; open loop: a
//! fixed rate for a duration), records latency in an HDR histogram, follows settlement until
//! no payment is left open, and checks the books through the API. It prints a progress line
//! to stderr every second, and at the end a table, a human summary line and a machine line
//! starting with `summary `; with `--series FILE`, the load second by second as CSV.
//! `loadgen --help` lists the options.
//!
//! Module map: [`args`] parses the command line, [`client`] speaks the API, [`run`] drives the
//! load, [`mixed`] sends a mixed backlog of captures, refunds and charges, [`follow`] samples
//! the backlog, [`verify`] checks the books, [`report`] prints, [`series`] keeps the load per
//! second.

mod args;
mod client;
mod follow;
mod mixed;
mod report;
mod run;
mod series;
mod verify;

use std::process::ExitCode;

fn main() -> ExitCode {
    let options = match args::parse(std::env::args_os(), std::env::var("ATOMIC_KEY").ok()) {
        Ok(options) => options,
        // clap's own message: the help text (exit 0) or one error with the usage (exit 2).
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
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
    match runtime.block_on(run::run(&options)) {
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
