//! A PostgreSQL cluster of the test's own (`initdb` in a temporary directory, a free port,
//! `fsync` and `synchronous_commit` on), so a test can crash and restart the database without
//! touching the shared server. Run as the `postgres` user when the tests run as root, as
//! `initdb` refuses root.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

/// A running cluster; stopped (immediately) and deleted when dropped.
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

fn bin_dir() -> PathBuf {
    let root = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .map(|e| e.unwrap().path())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version").join("bin")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

impl PgCluster {
    /// Creates and starts a cluster on a free port.
    pub fn start() -> Self {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("atomic-pg-{}-{unique}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self {
            bin: bin_dir(),
            dir,
            port,
        };
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the cluster directory to postgres");
        }
        cluster.run(
            "initdb",
            &["-A", "trust", "-U", "postgres", "--no-sync", "-D"],
            true,
        );
        cluster.pg_ctl(&["start", "-w", "-t", "60"]);
        cluster
    }

    /// `postgres://` URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Crash and recover: `pg_ctl restart -m immediate` (no checkpoint; WAL replay on start).
    pub fn crash_restart(&self) {
        self.pg_ctl(&["restart", "-m", "immediate", "-w", "-t", "60"]);
    }

    fn options(&self) -> String {
        format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=on -c synchronous_commit=on",
            self.port,
            self.dir.display()
        )
    }

    fn pg_ctl(&self, args: &[&str]) {
        let log = self.dir.join("log").display().to_string();
        let options = self.options();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-l", &log, "-o", &options, "-D"]);
        self.run("pg_ctl", &all, true);
    }

    /// Runs a PostgreSQL tool (as `postgres` when root) with the data directory last.
    fn run(&self, tool: &str, args: &[&str], with_dir: bool) {
        let program = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(args);
        if with_dir {
            cmd.arg(&self.dir);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = cmd
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
