//! Prints a `pgbench` script of the SQL floor (see `atomic_postgres::floor`):
//! `cargo run -p atomic-postgres --example floor -- accept GROUP` or `-- settle BATCH`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = args.get(1).and_then(|text| text.parse::<usize>().ok());
    let script = match (args.first().map(String::as_str), size, args.len()) {
        (Some("accept"), Some(group @ 1..=256), 2) => atomic_postgres::floor::accept_script(group),
        (Some("settle"), Some(batch @ 1..=10_000), 2) => {
            atomic_postgres::floor::settle_script(batch)
        }
        _ => {
            eprintln!(
                "usage: floor accept GROUP   (GROUP: 1 to 256 rows per statement)\n       \
                 floor settle BATCH   (BATCH: 1 to 10000 payments per batch, as WORKER_BATCH)"
            );
            return ExitCode::from(2);
        }
    };
    print!("{script}");
    ExitCode::SUCCESS
}
