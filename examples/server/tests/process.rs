//! The server binary as a newcomer meets it: started as a process with no services, it says it
//! runs on in-memory adapters, prints a usable platform key, serves the flow, and on SIGTERM
//! finishes what it holds and exits 0. A bad setting stops it with one line.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Answered, onboard, printed_key, server, wait_listening};
use serde_json::{Value, json};

#[tokio::test]
async fn starts_in_memory_serves_the_flow_and_stops_cleanly_on_sigterm() {
    let mut child = server().spawn().unwrap();
    let (address, storage) = wait_listening(&mut child).await;
    assert!(
        storage.contains("in-memory") && storage.contains("will not survive a restart"),
        "{storage}"
    );
    let key = printed_key(&mut child).await;
    let api = format!("http://{address}/api/v1");
    let http = reqwest::Client::new();

    let merchant = onboard(&http, &api, &key, "Shop").await;
    let account = merchant["data"]["account"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let payment = http
        .post(format!("{api}/payments"))
        .bearer_auth(&key)
        .json(&json!({"merchantId": account, "amount": 5000, "currency": "USD", "source": "tok_visa"}))
        .send()
        .await
        .unwrap();
    assert_eq!(payment.status(), 202);
    let payment: Value = payment.json().await.unwrap();
    let id = payment["data"]["id"].as_str().unwrap().to_owned();
    let mut status = String::new();
    for _ in 0..200 {
        let got: Value = http
            .get(format!("{api}/payments/{id}"))
            .bearer_auth(&key)
            .answer()
            .await;
        status = got["data"]["payment"]["status"]
            .as_str()
            .unwrap()
            .to_owned();
        if status == "SUCCESS" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, "SUCCESS");
    let balance: Value = http
        .get(format!("{api}/accounts/{account}"))
        .bearer_auth(&key)
        .answer()
        .await;
    assert_eq!(balance["data"]["balance"], 5000);

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within the shutdown timeout")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_with_one_line() {
    let out = server()
        .env("RATE_LIMIT_PAYMENTS", "ten per minute")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("RATE_LIMIT_PAYMENTS"), "{stderr}");
}

#[tokio::test]
async fn a_configured_platform_key_is_not_printed_and_works() {
    // sha256("my-platform-key")
    let mut child = server()
        .env(
            "MERCHANT_API_KEY_HASH",
            "fbc8fbbecee728e8b80603d82be02344366d08c232e0d306c7b4808b584973f6",
        )
        .spawn()
        .unwrap();
    let (address, _) = wait_listening(&mut child).await;
    let http = reqwest::Client::new();
    let unauthorized = http
        .get(format!("http://{address}/api/v1/payments"))
        .bearer_auth("my-platform-key-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let authorized = http
        .get(format!("http://{address}/api/v1/payments"))
        .bearer_auth("my-platform-key")
        .send()
        .await
        .unwrap();
    assert_eq!(authorized.status(), 200);
    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("ATOMIC_KEY"),
        "no key is minted or printed when one is configured"
    );
}
