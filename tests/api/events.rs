//! Events (API.md v1.1 *Events*): each payment or refund change a client waits for writes one
//! event with the object as GET rendered it right after the change; `GET /events` (`?type=`
//! plus the list parameters) and `GET /events/:id`, a merchant seeing its own and the platform
//! every one, served as the exact bytes the event was written as.

use serde_json::{Value, json};

use super::helpers::{
    EVENT_FIELDS, PAYMENT_FIELDS, REFUND_FIELDS, Reply, TestApp, assert_error,
    assert_invalid_field, assert_keys, assert_success, assert_timestamp, assert_uuid, authorized,
    onboard, pay, pay_body, payment, payment_body, random_id, spawn_app, succeeded, wait_refund,
    wait_terminal, walk_pages,
};

/// `GET /events` with this query (asserting 200); its items.
async fn events(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let reply = app.get(&format!("/events{query}"), key).await;
    assert_success(&reply, 200);
    assert_keys(reply.data(), &["items", "hasMore"]);
    reply.items()
}

/// The exact text of `data` in a success answer (`{"success":true,"data":…,"meta":…}`).
fn data_text(reply: &Reply) -> &str {
    let rest = reply
        .text
        .strip_prefix("{\"success\":true,\"data\":")
        .unwrap_or_else(|| panic!("a success envelope: {}", reply.text));
    let end = rest.rfind(",\"meta\":").expect("meta last");
    &rest[..end]
}

/// Asserts `event` is an event of `event_type` about `object`, for `merchant_account`.
#[track_caller]
fn assert_event(event: &Value, event_type: &str, merchant_account: &str, object: &Value) {
    assert_keys(event, EVENT_FIELDS);
    assert_uuid(&event["id"]);
    assert_eq!(event["type"], event_type, "{event}");
    assert_eq!(event["merchantId"], merchant_account, "{event}");
    assert_timestamp(&event["createdAt"]);
    assert_keys(&event["data"], &["object"]);
    assert_eq!(
        &event["data"]["object"], object,
        "the object as GET renders it"
    );
}

#[tokio::test]
async fn a_settled_payment_writes_its_event_with_the_payment_as_it_became() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    assert!(
        events(&app, &m.key, "").await.is_empty(),
        "no change, no event"
    );
    let ok = succeeded(&app, &m.key, &m.account_id, 1_500).await;
    let declined = pay(&app, &m.key, &m.account_id, 700, "tok_chargeDeclined").await;
    let declined = declined["id"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_terminal(&app, &m.key, &declined).await["status"],
        "FAILED"
    );

    let all = events(&app, &m.key, "").await;
    assert_eq!(all.len(), 2, "one event per change: {all:?}");
    let paid = payment(&app, &m.key, &ok).await;
    let failed = payment(&app, &m.key, &declined).await;
    assert_keys(&paid, PAYMENT_FIELDS);
    // Newest first.
    assert_event(&all[0], "payment.failed", &m.account_id, &failed);
    assert_event(&all[1], "payment.succeeded", &m.account_id, &paid);
    assert_eq!(
        all[1]["createdAt"], paid["updatedAt"],
        "when the change happened"
    );

    let only = events(&app, &m.key, "?type=payment.succeeded").await;
    assert_eq!(only, vec![all[1].clone()]);
    assert_eq!(
        events(&app, &m.key, "?type=payment.failed").await,
        vec![all[0].clone()]
    );
    for other in [
        "payment.authorized",
        "payment.canceled",
        "refund.succeeded",
        "refund.failed",
    ] {
        assert!(
            events(&app, &m.key, &format!("?type={other}"))
                .await
                .is_empty(),
            "{other}"
        );
    }

    // `GET /events/:id` answers the event itself, byte for byte as it was written (the order
    // of its fields included), and as the list shows it.
    let id = all[1]["id"].as_str().unwrap();
    let one = app.get(&format!("/events/{id}"), &m.key).await;
    assert_success(&one, 200);
    assert_eq!(one.data(), &all[1]);
    let text = data_text(&one);
    assert!(
        text.starts_with(&format!(
            "{{\"id\":\"{id}\",\"type\":\"payment.succeeded\",\"merchantId\":\"{}\",\"createdAt\":",
            m.account_id
        )),
        "{text}"
    );
    let object_at = text
        .find(",\"data\":{\"object\":")
        .expect("data.object last");
    assert!(text[object_at..].starts_with(&format!(",\"data\":{{\"object\":{{\"id\":\"{ok}\"")));
    let listed = app.get("/events?type=payment.succeeded", &m.key).await;
    assert!(listed.text.contains(text), "the same bytes in the list");
}

#[tokio::test]
async fn an_event_keeps_the_object_as_it_was_when_it_was_written() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let paid = succeeded(&app, &m.key, &m.account_id, 2_000).await;
    let before = payment(&app, &m.key, &paid).await;
    let reply = app
        .post(
            &format!("/payments/{paid}/refunds"),
            &m.key,
            &json!({"amount": 500}),
            None,
        )
        .await;
    assert_success(&reply, 202);
    let refund = wait_refund(&app, &m.key, reply.data()["id"].as_str().unwrap()).await;
    assert_eq!(refund["status"], "SUCCESS", "{refund}");
    let after = payment(&app, &m.key, &paid).await;
    assert_eq!(after["amountRefunded"], 500);

    let all = events(&app, &m.key, "").await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_keys(&refund, REFUND_FIELDS);
    assert_event(&all[0], "refund.succeeded", &m.account_id, &refund);
    // The payment's event still shows it as it was when it succeeded.
    assert_event(&all[1], "payment.succeeded", &m.account_id, &before);
    assert_eq!(all[1]["data"]["object"]["amountRefunded"], 0);
    assert_eq!(
        events(&app, &m.key, "?type=refund.succeeded").await,
        vec![all[0].clone()]
    );
}

#[tokio::test]
async fn authorizations_and_cancellations_write_their_events() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let id = authorized(&app, &m.key, &m.account_id, 900).await;
    let held = payment(&app, &m.key, &id).await;
    let authorized_events = events(&app, &m.key, "?type=payment.authorized").await;
    assert_eq!(authorized_events.len(), 1);
    assert_event(
        &authorized_events[0],
        "payment.authorized",
        &m.account_id,
        &held,
    );
    let canceled = app
        .post(&format!("/payments/{id}/cancel"), &m.key, &json!({}), None)
        .await;
    assert_success(&canceled, 200);
    let canceled_events = events(&app, &m.key, "?type=payment.canceled").await;
    assert_eq!(canceled_events.len(), 1);
    assert_event(
        &canceled_events[0],
        "payment.canceled",
        &m.account_id,
        &payment(&app, &m.key, &id).await,
    );
    assert_eq!(
        canceled_events[0]["data"]["object"]["cancellationReason"],
        "requested"
    );
    assert_eq!(events(&app, &m.key, "").await.len(), 2);
}

#[tokio::test]
async fn a_merchant_sees_its_own_events_and_the_platform_sees_every_one() {
    let app = spawn_app().await;
    let a = onboard(&app, "A", "USD").await;
    let b = onboard(&app, "B", "USD").await;
    succeeded(&app, &a.key, &a.account_id, 100).await;
    succeeded(&app, &b.key, &b.account_id, 200).await;
    // An account the platform key opened: its events are the platform's alone.
    let opened = app
        .post(
            "/accounts",
            &app.platform_key,
            &json!({"name": "House", "currency": "USD"}),
            None,
        )
        .await;
    assert_success(&opened, 201);
    let house = opened.data()["id"].as_str().unwrap().to_owned();
    let created = pay_body(
        &app,
        &app.platform_key,
        &payment_body(&house, 300, "tok_visa"),
    )
    .await;
    let house_payment = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_terminal(&app, &app.platform_key, &house_payment).await["status"],
        "SUCCESS"
    );

    let mine = events(&app, &a.key, "").await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["merchantId"], a.account_id.as_str());
    let theirs = events(&app, &b.key, "").await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["merchantId"], b.account_id.as_str());
    let every = events(&app, &app.platform_key, "").await;
    assert_eq!(every.len(), 3, "{every:?}");
    assert_eq!(every[0]["merchantId"], house.as_str());
    assert_eq!(
        events(&app, &app.platform_key, "?type=payment.succeeded")
            .await
            .len(),
        3
    );

    // Others' events are 404, as unknown ones are; the platform reads any.
    let b_event = theirs[0]["id"].as_str().unwrap();
    let house_event = every[0]["id"].as_str().unwrap();
    for id in [b_event, house_event, random_id().as_str()] {
        assert_error(
            &app.get(&format!("/events/{id}"), &a.key).await,
            404,
            "not_found",
        );
    }
    for id in [b_event, house_event] {
        assert_success(
            &app.get(&format!("/events/{id}"), &app.platform_key).await,
            200,
        );
    }
    // A cursor the caller cannot see is the same 400 as an unknown one.
    for cursor in [b_event, random_id().as_str()] {
        assert_invalid_field(
            &app.get(&format!("/events?startingAfter={cursor}"), &a.key)
                .await,
            "startingAfter",
        );
    }
}

#[tokio::test]
async fn bad_types_ids_and_list_parameters_are_400() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    for (query, field) in [
        ("type=payment.done", "type"),
        ("type=*", "type"),
        ("type=", "type"),
        ("type=PAYMENT.SUCCEEDED", "type"),
        ("type=payment.failed&type=refund.failed", "type"),
        ("status=SUCCESS", "status"),
        ("paymentId=x", "paymentId"),
        ("metadata[a]=1", "metadata[a]"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("startingAfter=nope", "startingAfter"),
        ("createdGte=2026-12-01", "createdGte"),
        ("createdLt=tomorrow", "createdLt"),
    ] {
        assert_invalid_field(&app.get(&format!("/events?{query}"), &m.key).await, field);
    }
    for id in ["not-a-uuid", "123", "0190a000000070008000000000000000"] {
        assert_invalid_field(&app.get(&format!("/events/{id}"), &m.key).await, "id");
    }
}

#[tokio::test]
async fn events_page_newest_first_and_filter_by_creation() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    for amount in [100, 200, 300] {
        succeeded(&app, &m.key, &m.account_id, amount).await;
    }
    let all = events(&app, &m.key, "").await;
    let ids: Vec<String> = all
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    let amounts: Vec<i64> = all
        .iter()
        .map(|e| e["data"]["object"]["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![300, 200, 100], "newest first");
    let pages = walk_pages(&app, &m.key, "/events", 1).await;
    assert_eq!(pages.concat(), ids);
    let typed = walk_pages(&app, &m.key, "/events?type=payment.succeeded", 2).await;
    assert_eq!(typed.concat(), ids);

    // `createdGte` at the middle event's time keeps it and the newer one; `createdLt` the rest.
    let middle = all[1]["createdAt"].as_str().unwrap().replace('+', "%2B");
    let newer = events(&app, &m.key, &format!("?createdGte={middle}")).await;
    assert_eq!(newer, all[..2].to_vec());
    let older = events(&app, &m.key, &format!("?createdLt={middle}")).await;
    assert_eq!(older, all[2..].to_vec());
}
