//! TEST-MATRIX row 26: secrets never reach the logs. The server runs on PostgreSQL with debug
//! logging while keys are minted, used, misused (in the query string, malformed, duplicated,
//! wrong, revoked) and revoked; then every raw key and its SHA-256 are searched for in
//! everything the process wrote and in every answer it gave: 0 occurrences.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use atomic_core::api_key::RawApiKey;
use atomic_postgres::testkit::TestDatabase;
use common::{Answered, Captured, KEY, KEY_HASH, server};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_and_no_key_hash_appears_in_the_logs_or_the_answers() {
    let db = TestDatabase::create().await;
    let mut child = server()
        .env("DATABASE_URL", db.url())
        .env("MERCHANT_API_KEY_HASH", KEY_HASH)
        .env("LOG_LEVEL", "debug")
        .spawn()
        .unwrap();
    let output = Captured::start(&mut child);
    let address = output.address().await;
    let api = format!("http://{address}/api/v1");
    let http = reqwest::Client::new();
    let mut answers: Vec<String> = Vec::new();
    let mut keys: Vec<String> = vec![KEY.to_owned()];

    // Two merchants, each with its minted key; a second key for the first.
    let mut merchants = Vec::new();
    for name in ["Secret Shop A", "Secret Shop B"] {
        let reply = http
            .post(format!("{api}/merchants"))
            .bearer_auth(KEY)
            .json(&json!({"name": name, "currency": "USD"}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
        let body: Value = reply.json().await.unwrap();
        keys.push(body["data"]["apiKey"]["key"].as_str().unwrap().to_owned());
        merchants.push(body["data"]["account"]["id"].as_str().unwrap().to_owned());
    }
    let minted: Value = http
        .post(format!("{api}/api-keys"))
        .bearer_auth(&keys[1])
        .json(&json!({}))
        .answer()
        .await;
    let extra_id = minted["data"]["id"].as_str().unwrap().to_owned();
    keys.push(minted["data"]["key"].as_str().unwrap().to_owned());

    // Every key used: a payment, a list, a replay.
    for (i, key) in keys.iter().enumerate().skip(1) {
        let account = &merchants[if i == 2 { 1 } else { 0 }];
        for _ in 0..2 {
            let reply = http
                .post(format!("{api}/payments"))
                .bearer_auth(key)
                .header("Idempotency-Key", format!("secret-{i}"))
                .json(&json!({"merchantId": account, "amount": 100, "currency": "USD", "source": "tok_visa"}))
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), 202);
            answers.push(reply.text().await.unwrap());
        }
        let listed = http
            .get(format!("{api}/payments"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        answers.push(listed.text().await.unwrap());
    }

    // A description and a request id that try to forge log lines.
    let forging = http
        .post(format!("{api}/payments"))
        .bearer_auth(&keys[1])
        .header("X-Request-Id", "abc\\n{\"level\":\"INFO\"}")
        .json(&json!({"merchantId": merchants[0], "amount": 100, "currency": "USD",
            "source": "tok_visa", "description": "x\n{\"level\":\"INFO\",\"fields\":{\"message\":\"forged\"}}\r\n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forging.status(), 202);
    answers.push(forging.text().await.unwrap());

    // Misuse: each must be refused, and nothing about the key may come back or be logged.
    let first = keys[1].clone();
    let revoke = http
        .delete(format!("{api}/api-keys/{extra_id}"))
        .bearer_auth(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    let revoked = keys[3].clone();
    let wrong = format!("{}{}", &first[..first.len() - 4], "zzzz");
    let attempts: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            http.get(format!("{api}/payments")).bearer_auth(&revoked),
            401,
        ),
        (http.get(format!("{api}/payments")).bearer_auth(&wrong), 401),
        (http.get(format!("{api}/payments?api_key={first}")), 401),
        (
            http.get(format!("{api}/payments"))
                .header("Authorization", format!("Basic {first}")),
            401,
        ),
        (
            http.get(format!("{api}/payments"))
                .header("Authorization", first.clone()),
            401,
        ),
        (
            http.get(format!("{api}/payments"))
                .header("Authorization", format!("Bearer {first} {first}")),
            401,
        ),
        (
            http.get(format!("{api}/payments"))
                .header("Authorization", format!("Bearer {first}"))
                .header("Authorization", format!("Bearer {}", keys[2])),
            400,
        ),
        (
            http.get(format!("{api}/payments/{first}"))
                .bearer_auth(&first),
            400,
        ),
        (
            http.post(format!("{api}/payments"))
                .bearer_auth(&first)
                .header("Idempotency-Key", first.clone())
                .header("Content-Type", "application/json")
                .body(format!("{{\"merchantId\": \"{first}\"")),
            400,
        ),
    ];
    for (n, (request, status)) in attempts.into_iter().enumerate() {
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status().as_u16(), status, "attempt {n}");
        answers.push(reply.text().await.unwrap());
    }

    // Stop the server, then read both of its streams to their end: everything it wrote is in.
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();

    let output = output.finish(&mut child).await.join("\n");
    // The last record the server writes, just before it exits: read only if the readers
    // reached the end of the streams.
    assert!(
        output.lines().any(|l| serde_json::from_str::<Value>(l)
            .is_ok_and(|log| log["fields"]["message"] == "stopped")),
        "the server's last log record (\"stopped\") is missing: the streams were not read to their end"
    );
    let debug_lines = output.lines().filter(|l| l.contains("\"DEBUG\"")).count();
    assert!(
        output.contains("payment accepted") && debug_lines > 0,
        "the run logged at debug level ({debug_lines} debug lines)"
    );
    // No forged log lines (row 21): every line the process wrote is one JSON object, although
    // requests carried CR/LF in JSON fields and headers.
    let forged: Vec<&str> = output
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).map_or(true, |v| !v.is_object()))
        .collect();
    assert!(
        forged.is_empty(),
        "lines that are not log records: {forged:?}"
    );
    // Requests are logged by route template, so an operator still sees what was asked.
    assert!(
        output.contains(r#""route":"/api/v1/payments/{id}""#),
        "route templates in the request spans"
    );
    let answers = answers.join("\n");
    let mut found = Vec::new();
    for key in &keys {
        let hash = RawApiKey::from_presented(key.clone()).hash().to_hex();
        for (what, secret) in [("key", key.as_str()), ("hash", hash.as_str())] {
            let in_logs = output.matches(secret).count();
            let in_answers = answers.matches(secret).count();
            for line in output.lines().filter(|l| l.contains(secret)) {
                eprintln!("LEAK {what}: {line}");
            }
            if in_logs + in_answers > 0 {
                found.push(format!(
                    "{what} of {}…: {in_logs} in logs, {in_answers} in answers",
                    &key[..key.len().min(10)]
                ));
            }
        }
    }
    println!(
        "row 26: keys={} log_lines={} debug_lines={debug_lines} occurrences={}",
        keys.len(),
        output.lines().count(),
        found.len()
    );
    assert!(found.is_empty(), "secrets leaked: {found:?}");
}
