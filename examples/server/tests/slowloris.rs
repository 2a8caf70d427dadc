//! TEST-MATRIX row 29: slowloris and a connection flood. Hundreds of sockets that send one
//! byte of a request head and stall must not take the server from a legitimate client: they
//! are cut at the header-read timeout, the connections the server holds stay under its cap,
//! and the process survives.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::{KEY, KEY_HASH, server, wait_listening};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// Long enough that a flood of stalled connections reaches the cap before the first of them
// are cut, even on a loaded machine.
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
const CAP: usize = 300;

/// File descriptors the process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_heads_are_cut_and_do_not_starve_other_clients() {
    let mut child = server()
        .env("MERCHANT_API_KEY_HASH", KEY_HASH)
        .env("RATE_LIMIT_GLOBAL", "off")
        .env("HEADER_READ_TIMEOUT", "3s")
        .env("MAX_CONNECTIONS", CAP.to_string())
        .spawn()
        .unwrap();
    let (address, _) = wait_listening(&mut child).await;
    let pid = child.id().unwrap();
    let url = format!("http://{address}/api/v1/payments");
    let http = reqwest::Client::new();
    let baseline_fds = open_fds(pid);

    // 200 slow clients: one byte of a request head each, then nothing.
    let attackers = 200;
    let mut slow = Vec::new();
    for _ in 0..attackers {
        let mut socket = TcpStream::connect(&address).await.unwrap();
        socket.write_all(b"G").await.unwrap();
        slow.push(socket);
    }
    let attack_started = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds_under_attack = open_fds(pid);

    // A legitimate client is served at once, not after the stalled ones.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let reply = http.get(&url).bearer_auth(KEY).send().await.unwrap();
        assert_eq!(reply.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a legitimate request took {slowest:?} under the attack"
    );

    // Each stalled socket is closed by the server at the header-read timeout.
    let mut cut = 0;
    let mut latest = Duration::ZERO;
    for mut socket in slow {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await;
        if matches!(read, Ok(Ok(_)) | Ok(Err(_))) {
            cut += 1;
            latest = latest.max(attack_started.elapsed());
        }
    }
    assert_eq!(
        cut, attackers,
        "every stalled connection closed by the server"
    );
    assert!(
        latest < HEADER_TIMEOUT + Duration::from_secs(2),
        "the last stalled connection closed after {latest:?}"
    );

    // A flood past the cap: the server holds at most CAP client connections; the rest wait
    // in the kernel's queue (no descriptor, no task) until stalled ones are cut.
    let flood_address = address.clone();
    let flooding = tokio::spawn(async move {
        let mut flood = Vec::new();
        for _ in 0..(CAP + 200) {
            let connect = TcpStream::connect(&flood_address);
            if let Ok(Ok(mut socket)) = tokio::time::timeout(Duration::from_secs(3), connect).await
            {
                let _ = socket.write_all(b"G").await;
                flood.push(socket);
            }
        }
        flood
    });
    let mut fds_in_flood = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        fds_in_flood = fds_in_flood.max(open_fds(pid));
    }
    let flood = flooding.await.unwrap();
    assert!(
        fds_in_flood <= baseline_fds + CAP + 5,
        "{fds_in_flood} descriptors open with a cap of {CAP} (baseline {baseline_fds})"
    );
    assert!(
        fds_in_flood + 5 >= baseline_fds + CAP,
        "the flood reached the cap ({fds_in_flood} descriptors, baseline {baseline_fds})"
    );
    drop(flood);
    // Once the flood is gone (cut or closed), the server answers again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = tokio::time::timeout(
            Duration::from_secs(2),
            http.get(&url).bearer_auth(KEY).send(),
        )
        .await
        .is_ok_and(|r| r.is_ok_and(|r| r.status() == 200));
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not come back after the flood"
        );
    }
    assert!(child.try_wait().unwrap().is_none(), "the server survived");
    println!(
        "row 29: slow_sockets={attackers} legit_slowest={slowest:?} cut={cut} last_cut_after={latest:?} \
         fds_baseline={baseline_fds} fds_under_attack={fds_under_attack} flood={} fds_in_flood={fds_in_flood} cap={CAP}",
        CAP + 200
    );
}
