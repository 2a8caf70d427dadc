//! Rate limits: the IETF and legacy headers, the 429 answer, who shares a counter (all keys of
//! a merchant; the platform alone; bad keys per client IP), and what is never limited. Windows
//! are aligned to the clock, so each test first makes sure it is not near a window's end.

use serde_json::json;

use super::helpers::{
    Reply, TestApp, assert_error, assert_success, onboard, payment_body, settle_window,
    spawn_app_with,
};

fn header_u64(reply: &Reply, name: &str) -> u64 {
    reply
        .header(name)
        .unwrap_or_else(|| panic!("{name} in {:?}", reply.headers))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is a number"))
}

/// Asserts the legacy headers and `RateLimit` agree: `policy` with `remaining` left.
#[track_caller]
fn assert_current(reply: &Reply, policy: &str, limit: u64, remaining: u64, window: u64) {
    assert_eq!(
        header_u64(reply, "ratelimit-limit"),
        limit,
        "{:?}",
        reply.headers
    );
    assert_eq!(
        header_u64(reply, "ratelimit-remaining"),
        remaining,
        "{:?}",
        reply.headers
    );
    let reset = header_u64(reply, "ratelimit-reset");
    assert!(
        (1..=window).contains(&reset),
        "reset {reset} within the {window} s window"
    );
    assert_eq!(
        reply.header("ratelimit"),
        Some(format!("\"{policy}\";r={remaining};t={reset}").as_str()),
        "{:?}",
        reply.headers
    );
}

async fn bad_key_get(app: &TestApp, i: usize, forwarded_for: Option<&str>) -> Reply {
    let mut request = app
        .client
        .get(app.url("/payments"))
        .bearer_auth(format!("sk_test_bad{i}"));
    if let Some(xff) = forwarded_for {
        request = request.header("X-Forwarded-For", xff);
    }
    app.send(request).await
}

async fn payment_count(app: &TestApp, key: &str) -> usize {
    let reply = app.get("/payments?limit=100", key).await;
    assert_success(&reply, 200);
    reply.items().len()
}

#[tokio::test]
async fn the_fourth_payment_in_a_window_is_429() {
    let app = spawn_app_with(&[
        ("RATE_LIMIT_PAYMENTS", "3/1m"),
        ("RATE_LIMIT_GLOBAL", "100/15m"),
    ])
    .await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = payment_body(&m.account_id, 100, "tok_visa");
    let first = app.post("/payments", &m.key, &body, None).await;
    assert_success(&first, 202);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"global\";q=100;w=900, \"payments\";q=3;w=60"),
        "every policy that applied"
    );
    assert_current(&first, "payments", 3, 2, 60);
    let mut created = 1;
    let used = settle_window(&first).await;
    for n in used + 1..=3 {
        let reply = app.post("/payments", &m.key, &body, None).await;
        assert_success(&reply, 202);
        assert_current(&reply, "payments", 3, 3 - n, 60);
        created += 1;
    }
    let refused = app.post("/payments", &m.key, &body, None).await;
    assert_error(&refused, 429, "rate_limited");
    assert_eq!(refused.json["error"]["message"], "Too many requests");
    let retry_after = header_u64(&refused, "retry-after");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_current(&refused, "payments", 3, 0, 60);
    assert!(refused.header("ratelimit-policy").is_some());
    assert_eq!(
        payment_count(&app, &m.key).await,
        created,
        "the refused payment was not stored"
    );

    // Other routes are counted by the global limiter only.
    let listed = app.get("/payments", &m.key).await;
    assert_success(&listed, 200);
    assert_eq!(
        listed.header("ratelimit-policy"),
        Some("\"global\";q=100;w=900")
    );
    assert!(
        listed
            .header("ratelimit")
            .unwrap()
            .starts_with("\"global\";r=")
    );
}

#[tokio::test]
async fn all_keys_of_a_merchant_share_one_counter_and_the_platform_has_its_own() {
    let app = spawn_app_with(&[("RATE_LIMIT_PAYMENTS", "3/1m")]).await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let minted = app.post("/api-keys", &m.key, &json!({}), None).await;
    assert_success(&minted, 201);
    let second = minted.data()["key"].as_str().unwrap().to_owned();
    let body = payment_body(&m.account_id, 100, "tok_visa");

    let first = app.post("/payments", &m.key, &body, None).await;
    assert_success(&first, 202);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"payments\";q=3;w=60")
    );
    let used = settle_window(&first).await;
    for n in used + 1..=3 {
        let key = if n % 2 == 0 { &second } else { &m.key };
        let reply = app.post("/payments", key, &body, None).await;
        assert_success(&reply, 202);
        assert_current(&reply, "payments", 3, 3 - n, 60);
    }
    assert_error(
        &app.post("/payments", &second, &body, None).await,
        429,
        "rate_limited",
    );
    assert_error(
        &app.post("/payments", &m.key, &body, None).await,
        429,
        "rate_limited",
    );
    // A key minted now buys no quota either.
    let third = app.post("/api-keys", &m.key, &json!({}), None).await;
    assert_success(&third, 201);
    let third = third.data()["key"].as_str().unwrap().to_owned();
    assert_error(
        &app.post("/payments", &third, &body, None).await,
        429,
        "rate_limited",
    );

    // The platform key counts on its own.
    let platform = app.post("/payments", &app.platform_key, &body, None).await;
    assert_success(&platform, 202);
    assert!(
        header_u64(&platform, "ratelimit-remaining") >= 1,
        "{:?}",
        platform.headers
    );
    // Another merchant too.
    let other = onboard(&app, "Other", "USD").await;
    assert_success(
        &app.post(
            "/payments",
            &other.key,
            &payment_body(&other.account_id, 1, "tok_visa"),
            None,
        )
        .await,
        202,
    );
}

#[tokio::test]
async fn bad_keys_are_limited_per_client_ip() {
    let app = spawn_app_with(&[("RATE_LIMIT_GLOBAL", "5/1m")]).await;
    let first = bad_key_get(&app, 0, None).await;
    assert_error(&first, 401, "unauthorized");
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"global\";q=5;w=60"),
        "limited responses carry the headers"
    );
    assert_current(&first, "global", 5, 4, 60);
    let used = settle_window(&first).await;
    for n in used + 1..=5 {
        let reply = bad_key_get(&app, usize::try_from(n).unwrap(), None).await;
        assert_error(&reply, 401, "unauthorized");
        assert_current(&reply, "global", 5, 5 - n, 60);
    }
    let refused = bad_key_get(&app, 6, None).await;
    assert_error(&refused, 429, "rate_limited");
    assert_eq!(refused.json["error"]["message"], "Too many requests");
    assert!(header_u64(&refused, "retry-after") >= 1);
    // No key at all is the same client.
    assert_error(&app.get_anon("/payments").await, 429, "rate_limited");
    // A valid key is counted for its owner, not the IP.
    assert_success(&app.get("/payments", &app.platform_key).await, 200);
}

#[tokio::test]
async fn forwarded_for_rotation_does_not_escape_the_limit_without_trust_proxy() {
    let app = spawn_app_with(&[("RATE_LIMIT_GLOBAL", "5/1m")]).await;
    let first = bad_key_get(&app, 0, Some("198.51.100.0")).await;
    assert_error(&first, 401, "unauthorized");
    let used = settle_window(&first).await;
    for n in used + 1..=5 {
        let xff = format!("198.51.100.{n}");
        assert_error(&bad_key_get(&app, 0, Some(&xff)).await, 401, "unauthorized");
    }
    let refused = bad_key_get(&app, 0, Some("203.0.113.77")).await;
    assert_error(&refused, 429, "rate_limited");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_counted() {
    let app = spawn_app_with(&[("RATE_LIMIT_GLOBAL", "5/1m"), ("TRUST_PROXY", "true")]).await;
    // Distinct forwarded clients each have their own counter.
    for i in 0..8 {
        let xff = format!("198.51.100.{i}");
        let reply = bad_key_get(&app, i, Some(&xff)).await;
        assert_error(&reply, 401, "unauthorized");
    }
    // One forwarded client is limited.
    let first = bad_key_get(&app, 0, Some("203.0.113.9")).await;
    assert_error(&first, 401, "unauthorized");
    let used = settle_window(&first).await;
    for _ in used + 1..=5 {
        assert_error(
            &bad_key_get(&app, 0, Some("203.0.113.9")).await,
            401,
            "unauthorized",
        );
    }
    assert_error(
        &bad_key_get(&app, 0, Some("203.0.113.9")).await,
        429,
        "rate_limited",
    );
    // The right-most entry is the one the trusted proxy saw.
    assert_error(
        &bad_key_get(&app, 0, Some("1.1.1.1, 203.0.113.9")).await,
        429,
        "rate_limited",
    );
}

#[tokio::test]
async fn health_routes_are_never_limited_and_carry_no_rate_limit_headers() {
    let app = spawn_app_with(&[
        ("RATE_LIMIT_GLOBAL", "2/1m"),
        ("RATE_LIMIT_PAYMENTS", "1/1m"),
    ])
    .await;
    for _ in 0..6 {
        for path in ["/health", "/health/ready"] {
            let reply = app.get_anon(path).await;
            assert_success(&reply, 200);
            for name in [
                "ratelimit",
                "ratelimit-policy",
                "ratelimit-limit",
                "ratelimit-remaining",
                "ratelimit-reset",
                "retry-after",
            ] {
                assert!(reply.header(name).is_none(), "{path} carries {name}");
            }
        }
    }
    // A protected route, by contrast, carries them.
    let protected = app.get("/payments", &app.platform_key).await;
    assert_success(&protected, 200);
    assert_eq!(
        protected.header("ratelimit-policy"),
        Some("\"global\";q=2;w=60")
    );
}

#[tokio::test]
async fn headers_describe_the_most_constrained_limiter() {
    let app = spawn_app_with(&[
        ("RATE_LIMIT_GLOBAL", "100/15m"),
        ("RATE_LIMIT_PAYMENTS", "10/1m"),
    ])
    .await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let first = app.get("/api-keys", &m.key).await;
    assert_success(&first, 200);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"global\";q=100;w=900")
    );
    assert_current(&first, "global", 100, 99, 900);
    let used = settle_window(&first).await;
    let second = app.get("/payments", &m.key).await;
    assert_current(&second, "global", 100, 99 - used, 900);
    // The merchant's first payment: global has ~97 left, payments 9: payments is described.
    let paid = app
        .post(
            "/payments",
            &m.key,
            &payment_body(&m.account_id, 100, "tok_visa"),
            None,
        )
        .await;
    assert_success(&paid, 202);
    assert_eq!(
        paid.header("ratelimit-policy"),
        Some("\"global\";q=100;w=900, \"payments\";q=10;w=60")
    );
    assert_current(&paid, "payments", 10, 9, 60);
    let used = settle_window(&paid).await;
    // Rejections that happen after the gate (400) are still counted and carry the headers.
    let invalid = app.post("/payments", &m.key, &json!({}), None).await;
    assert_error(&invalid, 400, "validation_error");
    assert_current(&invalid, "payments", 10, 9 - used, 60);
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_health_are_not_counted() {
    let app = spawn_app_with(&[("RATE_LIMIT_GLOBAL", "2/1m")]).await;
    let pk = app.platform_key.clone();
    for _ in 0..5 {
        let unknown = app.get("/nope", &pk).await;
        assert_error(&unknown, 404, "not_found");
        assert!(
            unknown.header("ratelimit").is_none(),
            "{:?}",
            unknown.headers
        );
        let wrong = app
            .send(app.client.delete(app.url("/payments")).bearer_auth(&pk))
            .await;
        assert_eq!(wrong.status, 405);
        assert!(wrong.header("ratelimit").is_none());
        assert_success(
            &app.send(app.client.get(app.url("/health")).bearer_auth(&pk))
                .await,
            200,
        );
    }
    // The platform's first counted request: one of two used, whatever the window.
    let first = app.get("/payments", &pk).await;
    assert_success(&first, 200);
    assert_current(&first, "global", 2, 1, 60);
}

#[tokio::test]
async fn a_fixed_window_admits_exactly_the_limit_per_window() {
    use std::time::{Duration, Instant};
    let app = spawn_app_with(&[("RATE_LIMIT_PAYMENTS", "2/3s")]).await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = payment_body(&m.account_id, 1, "tok_visa");
    // Pay every 100 ms until three windows have started (two of them seen from start to end).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut log: Vec<(Instant, u16, u64)> = Vec::new();
    let mut starts = 0;
    while starts < 3 {
        assert!(
            Instant::now() < deadline,
            "three 3 s windows within 15 s: {log:?}"
        );
        let sent = Instant::now();
        let reply = app.post("/payments", &m.key, &body, None).await;
        let remaining = header_u64(&reply, "ratelimit-remaining");
        match reply.status {
            202 => assert_eq!(
                reply.header("ratelimit-policy"),
                Some("\"payments\";q=2;w=3")
            ),
            429 => {
                assert_error(&reply, 429, "rate_limited");
                assert!((1..=3).contains(&header_u64(&reply, "retry-after")));
            }
            other => panic!("202 or 429, got {other}: {}", reply.text),
        }
        if reply.status == 202 && remaining == 1 {
            starts += 1;
        }
        log.push((sent, reply.status, remaining));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each window: 202 (1 left), 202 (0 left), then only 429s until the next window.
    let window_starts: Vec<usize> = (0..log.len())
        .filter(|&i| log[i].1 == 202 && log[i].2 == 1)
        .collect();
    assert_eq!(window_starts[0], 0, "the first payment opens a window");
    // The first window was entered at a random moment: at most the limit.
    let first = &log[..window_starts[1]];
    assert!(
        first.iter().filter(|(_, s, _)| *s == 202).count() <= 2,
        "{first:?}"
    );
    assert!(
        first
            .iter()
            .skip_while(|(_, s, _)| *s == 202)
            .all(|(_, s, _)| *s == 429),
        "{first:?}"
    );
    // The later ones were seen whole.
    for pair in window_starts[1..].windows(2) {
        let window = &log[pair[0]..pair[1]];
        let statuses: Vec<(u16, u64)> = window.iter().map(|(_, s, r)| (*s, *r)).collect();
        assert_eq!(statuses[..2], [(202, 1), (202, 0)], "{statuses:?}");
        assert!(
            statuses[2..].iter().all(|s| *s == (429, 0)),
            "only refusals after the limit: {statuses:?}"
        );
        assert!(statuses.len() > 2, "the limit was reached in each window");
        let length = window.last().unwrap().0.duration_since(window[0].0);
        assert!(
            length >= Duration::from_millis(1500),
            "a window lasts about 3 s, not {length:?}"
        );
    }
    let accepted = log.iter().filter(|(_, s, _)| *s == 202).count();
    assert_eq!(payment_count(&app, &m.key).await, accepted);
}

/// TEST-MATRIX row 27: 100 concurrent clients of one merchant hammer a limit of 100 per 2 s
/// window for about three windows. Every allowed answer is placed in its window exactly:
/// windows are aligned to the epoch on the limiter's clock (this host's), the decision was made
/// between the request's send and its answer, and `RateLimit-Reset` (whole seconds, rounded up)
/// says which half of its window it was made in; an interval shorter than the gap between two
/// windows' same halves fits one window only. Then per window: allowed <= the limit, each
/// `RateLimit-Remaining` value at most once; in any window-long interval, allowed <= twice the
/// limit; the limiter admits the whole limit of each full window; every 429 says when to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_clients_get_at_most_the_limit_per_window() {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
    const LIMIT: u64 = 100;
    const WINDOW: Duration = Duration::from_secs(2);
    let window_us = WINDOW.as_micros() as i64;
    let unix_us = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
    };
    let app = spawn_app_with(&[
        ("RATE_LIMIT_PAYMENTS", "100/2s"),
        ("RATE_LIMIT_GLOBAL", "off"),
    ])
    .await;
    let m = onboard(&app, "Busy Shop", "USD").await;
    let started = Instant::now();
    let run_for = Duration::from_millis(4_500);
    let mut clients = Vec::new();
    for _ in 0..100 {
        let (app, key) = (app.clone(), m.key.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while started.elapsed() < run_for {
                // An empty body: the limiter counts it before the body is checked (400), so
                // nothing is stored whatever the answer.
                let sent = unix_us();
                let reply = app.post("/payments", &key, &json!({}), None).await;
                seen.push((sent, unix_us(), reply));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        }));
    }
    let mut replies = Vec::new();
    for client in clients {
        replies.extend(client.await.unwrap());
    }
    let elapsed = started.elapsed();
    let full_windows = (elapsed.as_millis() / WINDOW.as_millis()) as u64 - 1;
    // Window index -> the remaining values it handed out.
    let mut windows: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    // (sent, answered) of each allowed request, for the sliding check.
    let mut allowed_at = Vec::new();
    let mut refused = 0u64;
    for (sent, answered, reply) in &replies {
        match reply.status {
            400 => {
                let remaining = header_u64(reply, "ratelimit-remaining");
                assert!(remaining < LIMIT, "{remaining}");
                let reset = header_u64(reply, "ratelimit-reset") as i64;
                assert!((1..=2).contains(&reset), "RateLimit-Reset {reset}");
                // Made at `into` into its window: [W - reset s, W - reset s + 1 s).
                let from = window_us - reset * 1_000_000;
                let candidates: Vec<i64> = (sent.div_euclid(window_us) - 1
                    ..=answered.div_euclid(window_us))
                    .filter(|w| {
                        let (lo, hi) = (w * window_us + from, w * window_us + from + 1_000_000);
                        lo <= *answered && *sent < hi
                    })
                    .collect();
                assert_eq!(
                    candidates.len(),
                    1,
                    "allowed answer (sent {sent}, answered {answered}, reset {reset}) fits \
                     windows {candidates:?}"
                );
                windows.entry(candidates[0]).or_default().push(remaining);
                allowed_at.push((*sent, *answered));
            }
            429 => {
                refused += 1;
                let retry = header_u64(reply, "retry-after");
                assert!((1..=2).contains(&retry), "Retry-After {retry}");
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    let allowed = allowed_at.len() as u64;
    let mut per_window = Vec::new();
    for (window, remaining) in &windows {
        let count = remaining.len() as u64;
        per_window.push(count);
        assert!(
            count <= LIMIT,
            "window {window}: {count} allowed, limit {LIMIT}"
        );
        let mut sorted = remaining.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            remaining.len(),
            "window {window} handed out a RateLimit-Remaining value twice"
        );
    }
    // Any window-long interval [s, s + W): an upper bound of what it admitted counts every
    // allowed request that may have been decided in it; the bound is largest at some answer's
    // time.
    let most_sliding = allowed_at
        .iter()
        .map(|(_, s)| {
            allowed_at
                .iter()
                .filter(|(sent, answered)| *sent < s + window_us && answered >= s)
                .count() as u64
        })
        .max()
        .unwrap_or(0);
    assert!(
        most_sliding <= 2 * LIMIT,
        "{most_sliding} allowed in one window-long interval"
    );
    assert!(
        allowed >= LIMIT * full_windows,
        "only {allowed} allowed over {full_windows} full windows"
    );
    assert!(refused > 0, "the clients did exceed the limit");
    println!(
        "row 27: clients=100 limit={LIMIT}/2s requests={} allowed={allowed} refused={refused} \
         allowed_per_window={per_window:?} most_in_a_sliding_window={most_sliding}",
        replies.len()
    );
}

/// Issue 13 item 10: with both limiters spent, `Retry-After` is the later of their resets, so a
/// client that obeys it is not refused again by the other one. The payments limiter (1/1m)
/// refuses the second payment, which was the global limiter's (2/1h) last request: the answer
/// must make the client wait for the hour's end, not the minute's.
#[tokio::test]
async fn retry_after_waits_for_every_spent_limiter() {
    let app = spawn_app_with(&[
        ("RATE_LIMIT_PAYMENTS", "1/1m"),
        ("RATE_LIMIT_GLOBAL", "2/1h"),
    ])
    .await;
    // Windows are aligned to the clock: a probing merchant first makes sure the hour does not
    // end in the next minute (there, both limiters reset together) and that the minute does not
    // end before the two payments are sent.
    let probe = onboard(&app, "Probe", "USD").await;
    let listed = app.get("/payments", &probe.key).await;
    assert_success(&listed, 200);
    let hour_left = header_u64(&listed, "ratelimit-reset");
    if hour_left < 75 {
        tokio::time::sleep(std::time::Duration::from_secs(hour_left + 1)).await;
    }
    let probed = app
        .post(
            "/payments",
            &probe.key,
            &payment_body(&probe.account_id, 100, "tok_visa"),
            None,
        )
        .await;
    assert_success(&probed, 202);
    settle_window(&probed).await;

    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = payment_body(&m.account_id, 100, "tok_visa");
    assert_success(&app.post("/payments", &m.key, &body, None).await, 202);
    let refused = app.post("/payments", &m.key, &body, None).await;
    assert_error(&refused, 429, "rate_limited");
    assert_current(&refused, "payments", 1, 0, 60);
    let retry_after = header_u64(&refused, "retry-after");
    assert!(
        (61..=3600).contains(&retry_after),
        "Retry-After {retry_after} s must reach the global window's end (over a minute away), \
         not the payments window's ({} s)",
        header_u64(&refused, "ratelimit-reset")
    );
}
