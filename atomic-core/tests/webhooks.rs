//! The webhook services on the in-memory store: endpoint creation refuses hosts that resolve to
//! refused addresses, the dispatcher signs and sends each due delivery and records its outcome
//! by the retry rules, never sends where the policy refuses, and a receiver that hangs holds
//! back no other endpoint. The sender is a recording one: nothing here touches a network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atomic_core::account::AccountName;
use atomic_core::memory::RecordingWebhooks;
use atomic_core::page::PageRequest;
use atomic_core::ports::{DeliveryFilter, SendOutcome, WebhookRequest, WebhookSender};
use atomic_core::service::{
    CancellationToken, CoreConfig, DispatcherConfig, EndpointRequest, WorkerConfig,
};
use atomic_core::time::{Clock, ManualClock};
use atomic_core::webhook::{
    AddressPolicy, DeliveryStatus, RetrySchedule, Subscription, WebhookDelivery, WebhookEndpoint,
    WebhookUrl,
};
use atomic_core::{
    Account, Amount, CaptureMethod, CardSource, Currency, Error, Metadata, PaymentRequest, Ports,
    Principal, Services, Timestamp,
};
use atomic_webhook_signature::{Headers, Secret, verify};

struct Shop {
    clock: Arc<ManualClock>,
    services: Services,
    account: Account,
}

async fn shop(sender: Arc<dyn WebhookSender>, allow_private: bool) -> Shop {
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_unix_micros(1_767_225_600_000_000).unwrap(),
    ));
    let ports = Ports {
        sender,
        ..Ports::in_memory_with_clock(clock.clone())
    };
    let config = CoreConfig {
        webhook_policy: AddressPolicy { allow_private },
        ..CoreConfig::default()
    };
    let services = Services::start(ports, config).await.unwrap();
    let account = services.accounts.prepare(
        Principal::Platform,
        AccountName::parse("shop").unwrap(),
        Currency::USD,
    );
    services.accounts.submit(&account, None).await.unwrap();
    Shop {
        clock,
        services,
        account: account.into_inner(),
    }
}

fn request(url: &str) -> EndpointRequest {
    EndpointRequest {
        url: WebhookUrl::parse(url).unwrap(),
        subscription: Subscription::parse(&["*"]).unwrap(),
        description: None,
    }
}

impl Shop {
    async fn endpoint(&self, url: &str) -> WebhookEndpoint {
        let made = self
            .services
            .webhooks
            .create(Principal::Platform, request(url), None)
            .await;
        made.unwrap().endpoint
    }

    /// Pays `n` payments and settles them: `n` `payment.succeeded` events.
    async fn pay(&self, n: usize) {
        for _ in 0..n {
            let payment = PaymentRequest {
                merchant_account: Some(self.account.id),
                amount: Amount::for_payment(100).unwrap(),
                currency: Currency::USD,
                source: CardSource::parse("tok_visa").unwrap(),
                description: None,
                capture_method: CaptureMethod::Automatic,
                metadata: Metadata::default(),
            };
            self.services
                .payments
                .create(Principal::Platform, payment, None)
                .await
                .unwrap();
        }
        let worker = self.services.worker(WorkerConfig::default());
        while !worker.run_once().await.unwrap().is_empty() {}
    }

    async fn deliveries(&self, endpoint: &WebhookEndpoint) -> Vec<WebhookDelivery> {
        let filter = DeliveryFilter::default();
        let all = PageRequest {
            limit: atomic_core::page::PageLimit::new(100).unwrap(),
            starting_after: None,
        };
        let page =
            self.services
                .webhooks
                .deliveries(Principal::Platform, endpoint.id, &filter, all);
        page.await.unwrap().items
    }

    /// Waits (10 s at most) until `n` deliveries to `endpoint` are `DELIVERED`.
    async fn delivered_to(&self, endpoint: &WebhookEndpoint, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.deliveries(endpoint).await;
            let delivered = all
                .iter()
                .filter(|d| d.status == DeliveryStatus::Delivered)
                .count();
            if delivered == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {delivered} of {n} delivered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn dispatcher(&self, schedule: &str) -> atomic_core::service::Dispatcher {
        self.services.dispatcher(DispatcherConfig {
            schedule: RetrySchedule::parse(schedule).unwrap(),
            ..DispatcherConfig::default()
        })
    }
}

#[tokio::test]
async fn a_delivery_is_the_event_signed_with_the_endpoint_secret() {
    let recorder = RecordingWebhooks::default();
    let shop = shop(Arc::new(recorder.clone()), true).await;
    let endpoint = shop.endpoint("http://127.0.0.1:9/hooks").await;
    shop.pay(1).await;
    assert_eq!(shop.dispatcher("5s").dispatch_once(10).await.unwrap(), 1);
    assert_eq!(
        shop.dispatcher("5s").dispatch_once(10).await.unwrap(),
        0,
        "delivered once"
    );

    let sent = recorder.sent();
    assert_eq!(sent.len(), 1);
    let event = shop
        .services
        .events
        .list(
            Principal::Platform,
            &Default::default(),
            PageRequest::default(),
        )
        .await
        .unwrap()
        .items
        .remove(0);
    let request = &sent[0];
    assert_eq!(request.url, endpoint.url);
    assert_eq!(request.id, event.id.to_string());
    assert_eq!(request.body, event.body.as_bytes(), "the event's bytes");
    let headers = Headers {
        id: &request.id,
        timestamp: &request.timestamp.to_string(),
        signature: &request.signature,
    };
    let secret = Secret::parse(&endpoint.secret.reveal()).unwrap();
    verify(&secret, &headers, &request.body, request.timestamp).unwrap();
    let delivery = shop.deliveries(&endpoint).await.remove(0);
    assert_eq!(
        (
            delivery.status,
            delivery.attempts,
            delivery.last_status_code
        ),
        (DeliveryStatus::Delivered, 1, Some(204))
    );
}

#[tokio::test]
async fn failed_attempts_are_retried_by_the_schedule_then_fail() {
    let recorder = RecordingWebhooks::default();
    recorder.answer(SendOutcome::Answered(500));
    let shop = shop(Arc::new(recorder.clone()), true).await;
    let endpoint = shop.endpoint("http://127.0.0.1:9/hooks").await;
    shop.pay(1).await;
    let dispatcher = shop.dispatcher("1s,2s");
    assert_eq!(dispatcher.dispatch_once(10).await.unwrap(), 1);
    let first = shop.deliveries(&endpoint).await.remove(0);
    assert_eq!(first.status, DeliveryStatus::Pending);
    assert_eq!(
        first.next_attempt_at,
        Some(shop.clock.now().saturating_add(Duration::from_secs(1)))
    );
    assert_eq!(
        dispatcher.dispatch_once(10).await.unwrap(),
        0,
        "not due before the schedule says"
    );
    for wait in [1, 2] {
        shop.clock.advance(Duration::from_secs(wait));
        assert_eq!(dispatcher.dispatch_once(10).await.unwrap(), 1);
    }
    let last = shop.deliveries(&endpoint).await.remove(0);
    assert_eq!(
        (last.status, last.attempts, last.next_attempt_at),
        (DeliveryStatus::Failed, 3, None)
    );
    assert_eq!(recorder.sent().len(), 3, "1 + len(schedule) attempts");

    let retried = shop
        .services
        .webhooks
        .retry(Principal::Platform, endpoint.id, last.id)
        .await
        .unwrap();
    assert_eq!(retried.status, DeliveryStatus::Pending);
    recorder.answer(SendOutcome::Answered(200));
    assert_eq!(dispatcher.dispatch_once(10).await.unwrap(), 1);
    assert_eq!(
        shop.deliveries(&endpoint).await[0].status,
        DeliveryStatus::Delivered
    );
}

#[tokio::test]
async fn a_delivery_to_an_address_the_policy_refuses_is_never_sent() {
    let recorder = RecordingWebhooks::default();
    let shop = shop(Arc::new(recorder.clone()), false).await;
    // Stored past the creation check, as an endpoint whose host resolves elsewhere later would.
    let endpoint = WebhookEndpoint::new(
        atomic_core::Owner::Platform,
        WebhookUrl::parse("http://127.0.0.1:9/hooks").unwrap(),
        Subscription::parse(&["*"]).unwrap(),
        None,
        shop.clock.now(),
    )
    .unwrap();
    shop.services
        .ports()
        .store
        .webhooks()
        .create_endpoint(&endpoint, None)
        .await
        .unwrap();
    shop.pay(1).await;
    shop.dispatcher("1s").dispatch_once(10).await.unwrap();
    assert!(recorder.sent().is_empty(), "nothing was sent");
    let delivery = shop.deliveries(&endpoint).await.remove(0);
    assert_eq!(
        delivery.last_error.as_deref(),
        Some("refused address: loopback")
    );
    assert_eq!(
        (delivery.status, delivery.last_status_code),
        (DeliveryStatus::Pending, None)
    );
}

#[tokio::test]
async fn creation_refuses_a_host_that_resolves_to_a_refused_address() {
    let strict = shop(Arc::new(RecordingWebhooks::default()), false).await;
    for url in [
        "http://127.0.0.1/",
        "http://[::1]:8080/",
        "http://10.1.2.3/",
        "http://hooks.example.com/",
    ] {
        let refused = strict
            .services
            .webhooks
            .create(Principal::Platform, request(url), None)
            .await;
        match refused {
            Err(Error::Validation(fields)) => assert_eq!(fields[0].field, "url", "{url}"),
            other => panic!("{url}: {other:?}"),
        }
    }
    let listed = strict.services.webhooks.list(
        Principal::Platform,
        Default::default(),
        PageRequest::default(),
    );
    assert!(listed.await.unwrap().items.is_empty(), "nothing was stored");
    let open = shop(Arc::new(RecordingWebhooks::default()), true).await;
    open.endpoint("http://127.0.0.1/").await;
}

/// Answers 204 at once, except for `hanging`'s host, which it never answers.
struct OneHangs {
    hanging: String,
    answered: Mutex<HashMap<String, usize>>,
}

#[async_trait]
impl WebhookSender for OneHangs {
    async fn send(&self, request: &WebhookRequest, _: AddressPolicy) -> SendOutcome {
        if request.url.as_str().starts_with(&self.hanging) {
            std::future::pending::<()>().await;
        }
        *self
            .answered
            .lock()
            .unwrap()
            .entry(request.url.as_str().to_owned())
            .or_default() += 1;
        SendOutcome::Answered(204)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_holds_back_no_other_endpoint() {
    let sender = Arc::new(OneHangs {
        hanging: "http://127.0.0.1:9/".into(),
        answered: Mutex::default(),
    });
    let shop = shop(sender.clone(), true).await;
    shop.endpoint("http://127.0.0.1:9/hangs").await;
    let healthy = shop.endpoint("http://127.0.0.2:9/healthy").await;
    shop.pay(10).await;
    let dispatcher = shop.services.dispatcher(DispatcherConfig {
        concurrency: 4,
        per_endpoint: 2,
        poll: Duration::from_millis(10),
        ..DispatcherConfig::default()
    });
    let stop = CancellationToken::new();
    let running = tokio::spawn(dispatcher.run(stop.clone()));
    shop.delivered_to(&healthy, 10).await;
    // Later events too, while the hanging receiver still holds its attempts.
    shop.pay(10).await;
    shop.delivered_to(&healthy, 20).await;
    stop.cancel();
    running.abort();
    assert_eq!(
        sender.answered.lock().unwrap().get(healthy.url.as_str()),
        Some(&20)
    );
}
