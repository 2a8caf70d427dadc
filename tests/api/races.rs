//! Decisions under concurrency, over HTTP (TEST-MATRIX rows 33 and 34): concurrent refunds
//! never reserve more than was captured, and of capture, cancel and refund racing on one
//! payment exactly one decision wins.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::helpers::{
    Reply, TestApp, assert_error, assert_success, authorized, entries, onboard, payment, spawn_app,
    succeeded, wait_payment, wait_refund, wait_terminal,
};

/// Sends every request at once (released together by a barrier) and returns the replies in
/// the order given.
async fn all_at_once(app: &TestApp, requests: Vec<(String, String, Value)>) -> Vec<Reply> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let mut tasks = JoinSet::new();
    for (i, (path, key, body)) in requests.into_iter().enumerate() {
        let (app, barrier) = (app.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            (i, app.post(&path, &key, &body, None).await)
        });
    }
    let mut replies: Vec<(usize, Reply)> = tasks.join_all().await;
    replies.sort_by_key(|(i, _)| *i);
    replies.into_iter().map(|(_, reply)| reply).collect()
}

/// Refunds of `payment_id`, all pages of the first 100.
async fn refunds_of(app: &TestApp, key: &str, payment_id: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/refunds?paymentId={payment_id}&limit=100"), key)
        .await;
    assert_success(&reply, 200);
    assert_eq!(reply.data()["hasMore"], false);
    reply.items()
}

/// The charge postings of a payment on its merchant account: CREDIT entries without a refund.
fn charges_of<'a>(lines: &'a [Value], payment_id: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|e| e["paymentId"] == payment_id && e["refundId"].is_null())
        .collect()
}

#[tokio::test]
async fn row_33_fifty_concurrent_refunds_of_30_percent_never_exceed_the_capture() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let paid = succeeded(&app, &m.key, &m.account_id, 10_000).await;
    let requests = (0..50)
        .map(|_| {
            (
                format!("/payments/{paid}/refunds"),
                m.key.clone(),
                json!({"amount": 3_000}),
            )
        })
        .collect();
    let replies = all_at_once(&app, requests).await;
    let accepted: Vec<&Reply> = replies.iter().filter(|r| r.status == 202).collect();
    for reply in replies.iter().filter(|r| r.status != 202) {
        assert_error(reply, 422, "amount_exceeds_refundable");
    }
    // Every answer is 202 or 422 and 422 means nothing was left: so exactly 3 fit.
    assert_eq!(
        accepted.len(),
        3,
        "accepted ≤ 3, and every 422 came when 3 had been"
    );
    let stored = refunds_of(&app, &m.key, &paid).await;
    assert_eq!(stored.len(), accepted.len(), "one refund per 202, no more");
    let reserved: i64 = stored
        .iter()
        .filter(|r| r["status"] != "FAILED")
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert!(
        reserved <= 10_000,
        "Σ not-FAILED refunds {reserved} ≤ amountCaptured"
    );
    let mut succeeded_sum = 0;
    for reply in &accepted {
        let done = wait_refund(&app, &m.key, reply.data()["id"].as_str().unwrap()).await;
        if done["status"] == "SUCCESS" {
            succeeded_sum += done["amount"].as_i64().unwrap();
        }
    }
    let p = payment(&app, &m.key, &paid).await;
    assert_eq!(
        p["amountRefunded"], succeeded_sum,
        "amountRefunded = Σ SUCCESS refunds"
    );
    assert_eq!(
        succeeded_sum, 9_000,
        "the merchant's balance covered all three"
    );
    assert_eq!(p["status"], "SUCCESS");
    let lines = entries(&app, &m.key, &m.account_id).await;
    assert_eq!(
        lines.iter().filter(|e| e["refundId"].is_string()).count(),
        3
    );
    if let Some(audit) = app.audit().await {
        assert!(audit.is_clean(), "books audit:\n{audit}");
    }
}

#[tokio::test]
async fn row_34_capture_cancel_and_refund_racing_on_one_payment_have_one_winner() {
    const ROUNDS: usize = 20;
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    // Three authorizations per round: capture ∥ cancel ∥ refund, two captures, refund ∥ cancel.
    let mut held = JoinSet::new();
    for _ in 0..ROUNDS * 3 {
        let (app, key, account) = (app.clone(), m.key.clone(), m.account_id.clone());
        held.spawn(async move { authorized(&app, &key, &account, 1_000).await });
    }
    let held: Vec<String> = held.join_all().await;
    let (mut captured, mut canceled) = (Vec::new(), Vec::new());
    for round in held.chunks(3) {
        let [first, second, third] = round else {
            unreachable!()
        };
        let post = |path: String, body: Value| (path, m.key.clone(), body);

        // capture ∥ cancel ∥ refund: exactly one of capture and cancel wins, and the refund
        // (of a payment that is not SUCCESS when it asks) is 409.
        let replies = all_at_once(
            &app,
            vec![
                post(format!("/payments/{first}/capture"), json!({"amount": 600})),
                post(format!("/payments/{first}/cancel"), json!({})),
                post(format!("/payments/{first}/refunds"), json!({"amount": 1})),
            ],
        )
        .await;
        let capture_won = replies[0].status == 202;
        let cancel_won = replies[1].status == 200;
        assert!(
            capture_won != cancel_won,
            "one winner: {:?}",
            [&replies[0].text, &replies[1].text]
        );
        let loser = if capture_won {
            &replies[1]
        } else {
            &replies[0]
        };
        assert_error(loser, 409, "invalid_state");
        if capture_won {
            captured.push((first.clone(), 600));
        } else {
            canceled.push(first.clone());
        }
        let refund = &replies[2];
        assert!(
            refund.status == 409 || (capture_won && refund.status == 202),
            "a refund is accepted only of a payment that is SUCCESS by then: {}",
            refund.text
        );
        if refund.status == 409 {
            assert_error(refund, 409, "invalid_state");
        }

        // Two captures: one wins, the other is 409.
        let replies = all_at_once(
            &app,
            vec![
                post(
                    format!("/payments/{second}/capture"),
                    json!({"amount": 300}),
                ),
                post(
                    format!("/payments/{second}/capture"),
                    json!({"amount": 700}),
                ),
            ],
        )
        .await;
        let winners: Vec<usize> = (0..2).filter(|i| replies[*i].status == 202).collect();
        assert_eq!(
            winners.len(),
            1,
            "{:?}",
            [&replies[0].text, &replies[1].text]
        );
        assert_error(&replies[1 - winners[0]], 409, "invalid_state");
        captured.push((second.clone(), if winners[0] == 0 { 300 } else { 700 }));

        // Refund ∥ cancel on an authorization: the cancel wins, the refund is 409.
        let replies = all_at_once(
            &app,
            vec![
                post(format!("/payments/{third}/refunds"), json!({})),
                post(format!("/payments/{third}/cancel"), json!({})),
            ],
        )
        .await;
        assert_error(&replies[0], 409, "invalid_state");
        assert_success(&replies[1], 200);
        canceled.push(third.clone());
    }

    // Settled: each capture posted once, of the winning amount; nothing for the canceled.
    for (id, amount) in &captured {
        let done = wait_terminal(&app, &m.key, id).await;
        assert_eq!(done["status"], "SUCCESS");
        assert_eq!(done["amountCaptured"], *amount);
    }
    for id in &canceled {
        let p = wait_payment(&app, &m.key, id, &["CANCELED"]).await;
        assert_eq!(p["cancellationReason"], "requested");
        assert_eq!(
            refunds_of(&app, &m.key, id).await.len(),
            0,
            "0 refunds of {id}"
        );
    }
    let lines = entries_all(&app, &m.key, &m.account_id).await;
    for (id, amount) in &captured {
        let charges = charges_of(&lines, id);
        assert_eq!(charges.len(), 1, "1 capture posting for {id}");
        assert_eq!(charges[0]["amount"], *amount);
    }
    for id in &canceled {
        assert!(charges_of(&lines, id).is_empty(), "nothing posted for {id}");
    }
    // Every refund there is belongs to a captured payment that is SUCCESS.
    let all_refunds = app.get("/refunds?limit=100", &m.key).await.items();
    for refund in &all_refunds {
        let of = refund["paymentId"].as_str().unwrap();
        assert!(captured.iter().any(|(id, _)| id == of), "refund of {of}");
        wait_refund(&app, &m.key, refund["id"].as_str().unwrap()).await;
    }
    assert_eq!(captured.len() + canceled.len(), ROUNDS * 3);
    if let Some(audit) = app.audit().await {
        assert!(audit.is_clean(), "books audit:\n{audit}");
    }
}

/// Every entry of an account, walking all pages.
async fn entries_all(app: &TestApp, key: &str, account_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/accounts/{account_id}/entries?limit=100"),
            Some(c) => format!("/accounts/{account_id}/entries?limit=100&startingAfter={c}"),
        };
        let reply = app.get(&path, key).await;
        assert_success(&reply, 200);
        let items = reply.items();
        cursor = items.last().map(|e| e["id"].as_str().unwrap().to_owned());
        out.extend(items);
        if reply.data()["hasMore"] == false {
            return out;
        }
    }
}
