//! The test-mode card table, end to end: SUCCESS moves money (one CREDIT on the merchant, one
//! DEBIT on the World account), FAILED moves nothing and says why.

use serde_json::Value;

use super::helpers::{TestApp, account, balance, entries, onboard, pay, spawn_app, wait_terminal};

async fn settle(app: &TestApp, key: &str, account_id: &str, amount: i64, source: &str) -> Value {
    let created = pay(app, key, account_id, amount, source).await;
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["source"], source);
    wait_terminal(app, key, created["id"].as_str().unwrap()).await
}

#[tokio::test]
async fn approved_tokens_succeed_with_exactly_one_credit_each() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let mut expected_balance = 0;
    for (i, source) in [
        "tok_visa",
        "tok_mastercard",
        "tok_amex",
        "tok_discover_4242",
    ]
    .iter()
    .enumerate()
    {
        let amount = 1000 + i64::try_from(i).unwrap() * 111;
        let before = balance(&app, &m.key, &m.account_id).await;
        let done = settle(&app, &m.key, &m.account_id, amount, source).await;
        assert_eq!(done["status"], "SUCCESS", "{source}");
        assert_eq!(done["failureReason"], Value::Null, "{source}");
        let id = done["id"].as_str().unwrap();
        let credits: Vec<Value> = entries(&app, &m.key, &m.account_id)
            .await
            .into_iter()
            .filter(|e| e["paymentId"] == id)
            .collect();
        assert_eq!(credits.len(), 1, "one entry for {source}: {credits:?}");
        assert_eq!(credits[0]["direction"], "CREDIT");
        assert_eq!(credits[0]["amount"], amount);
        assert_eq!(credits[0]["accountId"], m.account_id.as_str());
        assert_eq!(
            balance(&app, &m.key, &m.account_id).await,
            before + amount,
            "{source}"
        );
        expected_balance += amount;
    }
    assert_eq!(balance(&app, &m.key, &m.account_id).await, expected_balance);
    assert_eq!(entries(&app, &m.key, &m.account_id).await.len(), 4);
}

#[tokio::test]
async fn declined_tokens_fail_with_their_reason_and_move_nothing() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    for (source, reason) in [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("tok_chargeDeclinedProcessingError", "processing_error"),
    ] {
        let done = settle(&app, &m.key, &m.account_id, 4200, source).await;
        assert_eq!(done["status"], "FAILED", "{source}");
        assert_eq!(done["failureReason"], reason, "{source}");
    }
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 0);
    assert!(entries(&app, &m.key, &m.account_id).await.is_empty());

    // A later success still credits only its own amount.
    let ok = settle(&app, &m.key, &m.account_id, 10, "tok_visa").await;
    assert_eq!(ok["status"], "SUCCESS");
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 10);
}

#[tokio::test]
async fn a_success_debits_the_world_account_in_the_same_transaction() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let world = app.system_accounts["USD"].clone();
    let before = account(&app, &app.platform_key, &world).await;
    assert_eq!(
        before["allowNegative"], true,
        "a system account may go negative"
    );
    assert_eq!(before["currency"], "USD");

    let done = settle(&app, &m.key, &m.account_id, 3300, "tok_visa").await;
    let failed = settle(&app, &m.key, &m.account_id, 999, "tok_chargeDeclined").await;
    assert_eq!(
        (done["status"].as_str(), failed["status"].as_str()),
        (Some("SUCCESS"), Some("FAILED"))
    );
    let id = done["id"].as_str().unwrap();

    let credit = entries(&app, &m.key, &m.account_id).await;
    let debits: Vec<Value> = entries(&app, &app.platform_key, &world)
        .await
        .into_iter()
        .filter(|e| e["paymentId"] == id)
        .collect();
    assert_eq!(
        (credit.len(), debits.len()),
        (1, 1),
        "{credit:?} {debits:?}"
    );
    assert_eq!(debits[0]["direction"], "DEBIT");
    assert_eq!(debits[0]["amount"], 3300);
    assert_eq!(debits[0]["accountId"], world.as_str());
    assert_eq!(
        debits[0]["transactionId"], credit[0]["transactionId"],
        "one balanced transaction"
    );
    assert!(
        entries(&app, &app.platform_key, &world)
            .await
            .iter()
            .all(|e| e["paymentId"] != failed["id"]),
        "a FAILED payment has no entry"
    );
    // Balances of the currency sum to zero.
    let world_balance = balance(&app, &app.platform_key, &world).await;
    assert_eq!(world_balance - before["balance"].as_i64().unwrap(), -3300);
    assert_eq!(
        world_balance + balance(&app, &m.key, &m.account_id).await,
        0
    );
}

#[tokio::test]
async fn a_terminal_payment_never_changes_again() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let done = settle(&app, &m.key, &m.account_id, 500, "tok_visa").await;
    let failed = settle(&app, &m.key, &m.account_id, 500, "tok_chargeDeclined").await;
    // Several more reads (and more work for the workers) later, both are unchanged.
    settle(&app, &m.key, &m.account_id, 1, "tok_visa").await;
    for p in [&done, &failed] {
        let again = app
            .get(&format!("/payments/{}", p["id"].as_str().unwrap()), &m.key)
            .await;
        assert_eq!(&again.data()["payment"], p);
    }
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 501);
}

#[tokio::test]
async fn the_balances_of_each_currency_sum_to_zero() {
    let app = spawn_app().await;
    let mut merchants = Vec::new();
    for (name, currency) in [("U1", "USD"), ("U2", "USD"), ("E1", "EUR"), ("I1", "INR")] {
        merchants.push((onboard(&app, name, currency).await, currency));
    }
    let mut ids = Vec::new();
    for (i, (m, currency)) in merchants.iter().enumerate() {
        for (j, source) in ["tok_visa", "tok_chargeDeclined", "tok_amex"]
            .iter()
            .enumerate()
        {
            let amount = i64::try_from(100 * (i + 1) + j).unwrap();
            let body =
                serde_json::json!({"amount": amount, "currency": currency, "source": source});
            let reply = app.post("/payments", &m.key, &body, None).await;
            crate::helpers::assert_success(&reply, 202);
            ids.push((
                m.key.clone(),
                reply.data()["id"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for (key, id) in &ids {
        wait_terminal(&app, key, id).await;
    }
    for currency in ["USD", "EUR", "INR"] {
        let world = balance(&app, &app.platform_key, &app.system_accounts[currency]).await;
        let mut merchants_total = 0;
        for (m, c) in &merchants {
            if *c == currency {
                let b = balance(&app, &m.key, &m.account_id).await;
                let credits: i64 = entries(&app, &m.key, &m.account_id)
                    .await
                    .iter()
                    .map(|e| e["amount"].as_i64().unwrap())
                    .sum();
                assert_eq!(b, credits, "balance = credits - debits");
                merchants_total += b;
            }
        }
        assert!(merchants_total > 0);
        assert_eq!(world + merchants_total, 0, "{currency} sums to zero");
    }
}
