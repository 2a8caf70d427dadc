//! TEST-MATRIX row 21, log forging: requests carry CR/LF and JSON-breaking text (quotes,
//! backslashes, `\n{"level":"ERROR"}`) in every place a client controls, each tagged with a
//! marker `FORGEnn`, while the server logs at trace level (every target, the widest logging
//! there is). Then:
//! - every line on stdout and stderr is one JSON record of the server's shape (timestamp,
//!   level, target, fields), and the lines are exactly the records a JSON stream parser finds
//!   in the whole output: a forged line, or a record split by a raw line break, fails;
//! - one `finished processing request` record per request the router answered (each of
//!   those carries `x-request-id`; what hyper refuses before routing carries none): the
//!   matrix's "log line count == request count";
//! - hostile text reaches the logs only inside JSON strings, decoded to exactly what was sent
//!   (the HTTP method and a well-formed request id are logged as given), and no forged
//!   record text appears raw.
//!
//! What reaches a log line from a request is only what the server chooses to log: the
//! method (hyper accepts only token characters there, so no quote, backslash, CR or LF), the
//! route template (never the raw path or query), the request id when it is 1..=128 of
//! `[A-Za-z0-9._:-]` (else a new one), and the masked card token. Descriptions, names, keys,
//! paths, queries and field names are not logged; the JSON-breaking values are sent anyway,
//! so that logging one of them later is checked by the same assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Captured, KEY, KEY_HASH, server};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The forged record the hostile values try to slip in.
const FORGED: &str = "{\"level\":\"ERROR\",\"fields\":{\"message\":\"forged\"}}";
/// Methods are tokens: every character a token allows besides letters and digits.
const METHOD: &str = "FORGE11!#$%&'*+-.^_`|~";
/// A request id of the allowed characters, which the server logs as given.
const REQUEST_ID: &str = "FORGE10._:-ok";

/// Sends `head` (a whole request) on a new connection; returns the status line and whether
/// the answer carries `x-request-id` (the router answered it).
async fn raw(address: &str, head: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    let status = answer.lines().next().unwrap_or_default().to_owned();
    (status, answer.contains("\r\nx-request-id:"))
}

/// Every string in `value`, keys included.
fn strings<'a>(value: &'a Value, into: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => into.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, into)),
        Value::Object(map) => {
            for (k, v) in map {
                into.push(k);
                strings(v, into);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_request_text_never_forges_a_log_line() {
    let mut child = server()
        .env("MERCHANT_API_KEY_HASH", KEY_HASH)
        .env("RUST_LOG", "trace")
        .spawn()
        .unwrap();
    let output = Captured::start(&mut child);
    let address = output.address().await;
    let api = format!("http://{address}/api/v1");
    let http = reqwest::Client::new();
    // Requests the router answered (their answers carry x-request-id).
    let mut routed = 0;
    let mut count = |reply: &reqwest::Response| {
        assert!(reply.headers().contains_key("x-request-id"));
        routed += 1;
    };

    let merchant = http
        .post(format!("{api}/merchants"))
        .bearer_auth(KEY)
        .json(&json!({"name": "FORGE01 \"quoted\" \\back\\slash {\"level\":\"ERROR\"}", "currency": "USD"}))
        .send()
        .await
        .unwrap();
    count(&merchant);
    assert_eq!(merchant.status(), 201);
    let merchant: Value = merchant.json().await.unwrap();
    let account = merchant["data"]["account"]["id"].as_str().unwrap();

    // Header values may carry quotes and backslashes (not CR or LF: those go raw, below).
    let payment = http
        .post(format!("{api}/payments"))
        .bearer_auth(KEY)
        .header("X-Request-Id", "FORGE03\"\\{\"level\":\"ERROR\"}")
        .header("Idempotency-Key", "FORGE04\"}\\{\"level\":\"ERROR\"}")
        .header("User-Agent", "FORGE05\"\\")
        .json(
            &json!({"merchantId": account, "amount": 100, "currency": "USD",
            "source": "tok_visa", "description": format!("FORGE02\r\n{FORGED}\n\\\"")}),
        )
        .send()
        .await
        .unwrap();
    count(&payment);
    assert_eq!(payment.status(), 202);

    let mut refused = Vec::new();
    refused.push(
        http.post(format!("{api}/payments"))
            .bearer_auth(KEY)
            .json(
                &json!({"merchantId": account, "amount": 100, "currency": "USD",
                "source": "tok_visa", format!("FORGE06\"\n{FORGED}"): 1}),
            )
            .send()
            .await
            .unwrap(),
    );
    refused.push(
        http.get(format!("{api}/payments/FORGE07%22%5C%0D%0A{FORGED}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap(),
    );
    refused.push(
        http.get(format!("{api}/payments?status=FORGE08%22%5C%0A%7B%7D"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap(),
    );
    refused.push(
        http.get(format!("{api}/FORGE09%0D%0A%22{FORGED}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap(),
    );
    for reply in &refused {
        count(reply);
        assert!(reply.status().is_client_error(), "{}", reply.status());
    }
    let listed = http
        .get(format!("{api}/payments"))
        .bearer_auth(KEY)
        .header("X-Request-Id", REQUEST_ID)
        .send()
        .await
        .unwrap();
    count(&listed);
    assert_eq!(listed.status(), 200);

    // Raw requests: what a client library would refuse to send.
    let auth = format!("Authorization: Bearer {KEY}\r\nConnection: close\r\n");
    let heads: Vec<(String, &str)> = vec![
        (
            format!("{METHOD} /api/v1/payments HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "405",
        ),
        (
            format!("FORGE12\"\\ /api/v1/payments HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
        ),
        (
            format!(
                "GET /api/v1/payments HTTP/1.1\r\nHost: x\r\nX-Request-Id: FORGE13\n{FORGED}\r\n{auth}\r\n"
            ),
            "400",
        ),
        (
            format!(
                "GET /api/v1/payments HTTP/1.1\r\nHost: x\r\nX-Request-Id: FORGE14\r{FORGED}\r\n{auth}\r\n"
            ),
            "400",
        ),
        (
            format!("GET /api/v1/payments/FORGE15\r\n{FORGED} HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
        ),
        (
            format!(
                "GET /api/v1/payments HTTP/1.1\r\nHost: x\r\nX-Request-Id: FORGE16\"\\\r\nUser-Agent: FORGE17\"\\{FORGED}\r\n{auth}\r\n"
            ),
            "200",
        ),
    ];
    let sent_raw = heads.len();
    for (head, status) in heads {
        let (line, answered_by_router) = raw(&address, head.as_bytes()).await;
        assert!(line.contains(status), "{head:?}: {line}");
        if answered_by_router {
            routed += 1;
        }
    }

    // Stop the server; read both streams to their end.
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let lines = output.finish(&mut child).await;
    let text = lines.join("\n");

    // One record per line, each of the server's shape; and as many records in the whole
    // output as there are lines.
    let mut not_records = Vec::new();
    let mut records = Vec::new();
    for line in &lines {
        match serde_json::from_str::<Value>(line) {
            Ok(record)
                if record["timestamp"].is_string()
                    && record["level"].is_string()
                    && record["target"].is_string()
                    && record["fields"].is_object() =>
            {
                records.push(record);
            }
            _ => not_records.push(line.as_str()),
        }
    }
    assert!(
        not_records.is_empty(),
        "{} lines that are not one log record: {not_records:?}",
        not_records.len()
    );
    let streamed = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .expect("the output is a stream of JSON records");
    assert_eq!(
        streamed.len(),
        lines.len(),
        "records in the output against its lines"
    );

    // One "finished processing request" per request the router answered.
    let finished = records
        .iter()
        .filter(|r| r["fields"]["message"] == "finished processing request")
        .count();
    assert_eq!(
        finished, routed,
        "request records against requests answered by the router"
    );

    // Hostile text only inside JSON strings: the forged record never appears raw, and what
    // is logged from a request decodes to exactly what was sent.
    for raw_text in [FORGED, "{\"level\":\"ERROR\"}", "\"message\":\"forged\""] {
        assert!(
            !text.contains(raw_text),
            "forged text {raw_text} in the output"
        );
    }
    let mut markers = std::collections::BTreeSet::new();
    let mut marked = 0;
    let mut logged_as_sent = (false, false);
    for record in &records {
        let mut texts = Vec::new();
        strings(record, &mut texts);
        let in_strings: usize = texts.iter().map(|t| t.matches("FORGE").count()).sum();
        let raw_count = serde_json::to_string(record)
            .unwrap()
            .matches("FORGE")
            .count();
        assert_eq!(in_strings, raw_count, "a marker outside a string: {record}");
        marked += in_strings;
        for t in &texts {
            for (at, _) in t.match_indices("FORGE") {
                markers.insert(t[at..(at + 7).min(t.len())].to_owned());
            }
        }
        logged_as_sent.0 |= record["span"]["method"] == METHOD;
        logged_as_sent.1 |= record["span"]["request_id"] == REQUEST_ID;
    }
    assert_eq!(
        logged_as_sent,
        (true, true),
        "the hostile method and request id reached the logs, as sent"
    );
    println!(
        "row 21 (log forging): requests={} ({sent_raw} raw), answered_by_router={routed} \
         log_lines={} records={} finished_request_records={finished} \
         markers_logged={markers:?} ({marked} occurrences) forged_lines=0",
        7 + sent_raw,
        lines.len(),
        streamed.len()
    );
}
