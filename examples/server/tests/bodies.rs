//! TEST-MATRIX row 17: huge and deeply nested bodies cannot exhaust the server (OWASP API4).
//! A 1 MB body announced by Content-Length, 100 MB streamed in chunks without a length, and
//! JSON nested 30,000 deep are each refused within a second, the process's memory hardly
//! moves, and it keeps serving. A client reads its 413 even when it writes the whole body
//! first: the server drains what it refused instead of resetting the connection.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::{KEY, KEY_HASH, rss_kib, server, wait_listening};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;

/// How the server ended an upload.
#[derive(Debug)]
struct Ended {
    /// The status it answered, if the client could read one (a connection reset before the
    /// client read the answer leaves none).
    status: Option<u16>,
    /// Body bytes written before the client stopped (or could not write any more).
    sent: usize,
    /// The error that stopped the client writing, if one did.
    write_error: Option<std::io::ErrorKind>,
    took: Duration,
}

/// Whether the client writes its whole body whatever the server does (as Python's urllib
/// does), or stops at the first sign of an answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writes {
    Whole,
    UntilAnswered,
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(answer);
    text.lines()
        .next()
        .filter(|l| l.len() >= 12)
        .and_then(|l| l[9..12].parse::<u16>().ok())
}

/// Sends a head, then `piece` `times` over as the body (each piece a chunk when `chunked`),
/// then reads the answer.
async fn send(
    address: &str,
    head: String,
    piece: Vec<u8>,
    times: usize,
    chunked: bool,
    writes: Writes,
) -> Ended {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sent = 0;
    let mut write_error = None;
    for _ in 0..times {
        if writes == Writes::UntilAnswered {
            match stream.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        let written = if chunked {
            let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
            framed.extend_from_slice(&piece);
            framed.extend_from_slice(b"\r\n");
            stream.write_all(&framed).await
        } else {
            stream.write_all(&piece).await
        };
        if let Err(error) = written {
            write_error = Some(error.kind());
            break;
        }
        sent += piece.len();
    }
    if chunked && sent == piece.len() * times {
        let _ = stream.write_all(b"0\r\n\r\n").await;
    }
    // Read the answer (a reset may have taken it).
    while status_of(&answer).is_none() {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    Ended {
        status: status_of(&answer),
        sent,
        write_error,
        took: started.elapsed(),
    }
}

/// A head for `POST /payments` with this framing (`Content-Length` when `length` is given,
/// else chunked).
fn head(address: &str, length: Option<usize>) -> String {
    let framing = match length {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".to_owned(),
    };
    format!(
        "POST /api/v1/payments HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    )
}

async fn spawn_server() -> (Child, String) {
    let mut child = server()
        .env("MERCHANT_API_KEY_HASH", KEY_HASH)
        .env("RATE_LIMIT_GLOBAL", "off")
        .env("RATE_LIMIT_PAYMENTS", "off")
        .spawn()
        .unwrap();
    let (address, _) = wait_listening(&mut child).await;
    (child, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_nested_bodies_are_refused_fast_without_memory_growth() {
    let (mut child, address) = spawn_server().await;
    let pid = child.id().unwrap();
    let head = |length: Option<usize>| head(&address, length);
    let rss_before = rss_kib(pid);

    // 1 MB announced by Content-Length: refused from the head alone, and the client, which
    // writes it whole, still reads the 413.
    let one_mb = send(
        &address,
        head(Some(1 << 20)),
        vec![b' '; 16 * 1024],
        64,
        false,
        Writes::Whole,
    )
    .await;
    assert_eq!(
        (one_mb.status, one_mb.sent, one_mb.write_error),
        (Some(413), 1 << 20, None),
        "{one_mb:?}"
    );
    // 100 MB streamed in 16 KiB chunks: the server refuses it after 64 KiB and stops taking it
    // past its bound, but the client has its 413 first.
    let streamed = send(
        &address,
        head(None),
        vec![b' '; 16 * 1024],
        6_400,
        true,
        Writes::UntilAnswered,
    )
    .await;
    assert_eq!(streamed.status, Some(413), "{streamed:?}");
    assert!(
        streamed.sent < 10 << 20,
        "the server took {} bytes of it",
        streamed.sent
    );
    // Well-formed JSON nested 30,000 deep (60,000 bytes, under the 64 KiB limit): refused by
    // the parser's depth limit, not by a stack overflow.
    let nested = [vec![b'['; 30_000], vec![b']'; 30_000]].concat();
    let deep = send(
        &address,
        head(Some(nested.len())),
        nested,
        1,
        false,
        Writes::Whole,
    )
    .await;
    assert_eq!(deep.status, Some(400), "{deep:?}");
    for ended in [&one_mb, &streamed, &deep] {
        assert!(ended.took < Duration::from_secs(1), "{ended:?}");
    }
    let rss_after = rss_kib(pid);
    assert!(
        rss_after.saturating_sub(rss_before) < 20 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Still serving, and alive.
    let health = reqwest::get(format!("http://{address}/api/v1/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(child.try_wait().unwrap().is_none());
    println!(
        "row 17: 1MB {one_mb:?}; 100MB chunked {streamed:?}; nested 30000 deep {deep:?}; \
         rss_growth_kib={}",
        rss_after.saturating_sub(rss_before)
    );
}

/// Issue 13 item 6: a client that writes a whole 2 MiB body (as Python's urllib does) before it
/// reads receives the 413, every time, not a broken pipe or a reset: the server reads and
/// discards what the client still sends before it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_written_whole_always_gets_its_413() {
    const TRIES: usize = 30;
    let (_child, address) = spawn_server().await;
    let mut failed = Vec::new();
    for _ in 0..TRIES {
        let ended = send(
            &address,
            head(&address, Some(2 << 20)),
            vec![b' '; 64 * 1024],
            32,
            false,
            Writes::Whole,
        )
        .await;
        if (ended.status, ended.sent, ended.write_error) != (Some(413), 2 << 20, None) {
            failed.push(ended);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {TRIES} uploads got no 413: {failed:?}",
        failed.len()
    );
}
