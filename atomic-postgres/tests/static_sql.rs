//! TEST-MATRIX row 20, the static half: every SQL statement this crate runs is a constant with
//! bound parameters. sqlx 0.9 accepts only `&'static str` as a query unless the caller wraps a
//! built string in `AssertSqlSafe`; so no library source may use `AssertSqlSafe` (the test kit
//! alone does, for `CREATE`/`DROP` of the databases and roles it names itself), and no library
//! source may build SQL with `format!`. The SQL floor (`floor.rs`) builds `pgbench` scripts as
//! text and runs none: it may format SQL, as long as it never touches sqlx.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

const SQL_WORDS: [&str; 5] = ["SELECT ", "INSERT ", "UPDATE ", "DELETE ", "WHERE "];

#[test]
fn no_library_source_builds_sql_at_run_time() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("testkit.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        checked += 1;
        let prints_scripts = path.ends_with("floor.rs");
        for (n, line) in text.lines().enumerate() {
            if prints_scripts {
                if line.contains("sqlx") {
                    found.push(format!(
                        "{}:{}: runs SQL: {}",
                        path.display(),
                        n + 1,
                        line.trim()
                    ));
                }
                continue;
            }
            let built = line.contains("format!(")
                && SQL_WORDS.iter().any(|w| line.to_uppercase().contains(w));
            if line.contains("AssertSqlSafe") || built {
                found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(checked >= 8, "read {checked} source files");
    assert!(
        found.is_empty(),
        "SQL built at run time:\n{}",
        found.join("\n")
    );
}
