//! Prints a `pgbench` script of the SQL floor (see `atomic_postgres::floor`):
//! `cargo run -p atomic-postgres --example floor -- accept GROUP`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let group = args
        .get(1)
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|size| (1..=256).contains(size));
    match (args.first().map(String::as_str), group, args.len()) {
        (Some("accept"), Some(group), 2) => {
            print!("{}", atomic_postgres::floor::accept_script(group));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: floor accept GROUP   (GROUP: 1 to 256 rows per statement)");
            ExitCode::from(2)
        }
    }
}
