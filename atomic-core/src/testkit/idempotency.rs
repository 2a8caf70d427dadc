//! Conformance cases for [`crate::ports::IdempotencyStore`].

use std::sync::Arc;
use std::time::Duration;

use super::{StoreKit, completion, fingerprint, onboard, policy, unique_key};
use crate::error::Error;
use crate::idempotency::{Claim, ClaimOutcome, ClaimToken, Completion, IdempotencyPolicy};
use crate::money::Currency;
use crate::principal::Principal;

async fn acquired(
    kit: &StoreKit,
    scope: Principal,
    key: &crate::idempotency::IdempotencyKey,
    fp: u8,
) -> crate::idempotency::Claim {
    match kit
        .store
        .idempotency()
        .claim(scope, key, fingerprint(fp), policy())
        .await
        .unwrap()
    {
        ClaimOutcome::Acquired(c) => c,
        other => panic!("expected to acquire, got {other:?}"),
    }
}

pub async fn a_completed_key_replays_its_response(kit: &StoreKit) {
    let key = unique_key();
    let claim = acquired(kit, Principal::Platform, &key, 1).await;
    kit.store
        .idempotency()
        .complete(&completion(&claim, "{\"id\":1}"))
        .await
        .unwrap();
    for _ in 0..3 {
        match kit
            .store
            .idempotency()
            .claim(Principal::Platform, &key, fingerprint(1), policy())
            .await
            .unwrap()
        {
            ClaimOutcome::Replay(r) => {
                assert_eq!((r.status, &r.body[..]), (201, &b"{\"id\":1}"[..]))
            }
            other => panic!("expected a replay, got {other:?}"),
        }
    }
}

pub async fn a_different_request_under_the_same_key_is_refused(kit: &StoreKit) {
    let key = unique_key();
    let claim = acquired(kit, Principal::Platform, &key, 1).await;
    assert_eq!(
        kit.store
            .idempotency()
            .claim(Principal::Platform, &key, fingerprint(2), policy())
            .await
            .unwrap(),
        ClaimOutcome::Mismatch,
        "checked first, even while in progress"
    );
    kit.store
        .idempotency()
        .complete(&completion(&claim, "done"))
        .await
        .unwrap();
    assert_eq!(
        kit.store
            .idempotency()
            .claim(Principal::Platform, &key, fingerprint(2), policy())
            .await
            .unwrap(),
        ClaimOutcome::Mismatch
    );
}

pub async fn an_unfinished_key_is_in_progress(kit: &StoreKit) {
    let key = unique_key();
    acquired(kit, Principal::Platform, &key, 1).await;
    assert_eq!(
        kit.store
            .idempotency()
            .claim(Principal::Platform, &key, fingerprint(1), policy())
            .await
            .unwrap(),
        ClaimOutcome::InProgress
    );
}

pub async fn a_released_key_runs_anew(kit: &StoreKit) {
    let key = unique_key();
    let claim = acquired(kit, Principal::Platform, &key, 1).await;
    kit.store.idempotency().release(&claim).await.unwrap();
    // After an error the retry may even be a corrected request.
    let again = acquired(kit, Principal::Platform, &key, 2).await;
    assert_ne!(again.token, claim.token);
    assert!(
        matches!(
            kit.store
                .idempotency()
                .complete(&completion(&claim, "late"))
                .await,
            Err(Error::IdempotencyClaimLost)
        ),
        "a released claim cannot complete"
    );
}

pub async fn keys_are_scoped_to_their_caller(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    let key = unique_key();
    let claim_a = acquired(kit, a.principal(), &key, 1).await;
    kit.store
        .idempotency()
        .complete(&completion(&claim_a, "A's response"))
        .await
        .unwrap();
    let claim_b = acquired(kit, b.principal(), &key, 1).await;
    kit.store
        .idempotency()
        .complete(&completion(&claim_b, "B's response"))
        .await
        .unwrap();
    acquired(kit, Principal::Platform, &key, 1).await;
    match kit
        .store
        .idempotency()
        .claim(a.principal(), &key, fingerprint(1), policy())
        .await
        .unwrap()
    {
        ClaimOutcome::Replay(r) => assert_eq!(&r.body[..], b"A's response"),
        other => panic!("{other:?}"),
    }
}

pub async fn expired_keys_are_new_again_and_purged(kit: &StoreKit) {
    let ttl = IdempotencyPolicy {
        ttl: Duration::from_secs(600),
        lock_timeout: Duration::from_secs(60),
    };
    let key = unique_key();
    let ClaimOutcome::Acquired(claim) = kit
        .store
        .idempotency()
        .claim(Principal::Platform, &key, fingerprint(1), ttl)
        .await
        .unwrap()
    else {
        panic!()
    };
    kit.store
        .idempotency()
        .complete(&Completion {
            policy: ttl,
            ..completion(&claim, "old")
        })
        .await
        .unwrap();
    kit.time.advance(Duration::from_secs(590)).await;
    assert!(
        matches!(
            kit.store
                .idempotency()
                .claim(Principal::Platform, &key, fingerprint(1), ttl)
                .await
                .unwrap(),
            ClaimOutcome::Replay(_)
        ),
        "still inside the window"
    );
    kit.time.advance(Duration::from_secs(20)).await;
    assert!(
        kit.store
            .idempotency()
            .purge_expired(100_000)
            .await
            .unwrap()
            >= 1
    );
    assert!(
        matches!(
            kit.store
                .idempotency()
                .claim(Principal::Platform, &key, fingerprint(2), ttl)
                .await
                .unwrap(),
            ClaimOutcome::Acquired(_)
        ),
        "after the window the key is new"
    );
}

pub async fn a_dead_holder_is_taken_over_and_cannot_complete(kit: &StoreKit) {
    let key = unique_key();
    let dead = acquired(kit, Principal::Platform, &key, 1).await;
    kit.time
        .advance(policy().lock_timeout + Duration::from_secs(1))
        .await;
    let live = acquired(kit, Principal::Platform, &key, 1).await;
    assert!(matches!(
        kit.store
            .idempotency()
            .complete(&completion(&dead, "dead"))
            .await,
        Err(Error::IdempotencyClaimLost)
    ));
    kit.store.idempotency().release(&dead).await.unwrap();
    kit.store
        .idempotency()
        .complete(&completion(&live, "live"))
        .await
        .unwrap();
    assert!(
        matches!(kit.store.idempotency().claim(Principal::Platform, &key, fingerprint(1), policy()).await.unwrap(), ClaimOutcome::Replay(r) if &r.body[..] == b"live")
    );
}

/// A claim whose holder died (or whose release failed) stops guarding its key after the lock
/// timeout, whatever the next request's body: an unfinished claim created nothing, so a
/// corrected request must not be refused as a reuse of the key for the whole window.
pub async fn a_dead_holder_does_not_block_a_corrected_request(kit: &StoreKit) {
    let key = unique_key();
    let dead = acquired(kit, Principal::Platform, &key, 1).await;
    assert!(
        matches!(
            kit.store
                .idempotency()
                .claim(Principal::Platform, &key, fingerprint(2), policy())
                .await
                .unwrap(),
            ClaimOutcome::Mismatch
        ),
        "while the holder may be running, another body is a reuse of the key"
    );
    kit.time
        .advance(policy().lock_timeout + Duration::from_secs(1))
        .await;
    let corrected = acquired(kit, Principal::Platform, &key, 2).await;
    assert!(matches!(
        kit.store
            .idempotency()
            .complete(&completion(&dead, "dead"))
            .await,
        Err(Error::IdempotencyClaimLost)
    ));
    kit.store
        .idempotency()
        .complete(&Completion {
            fingerprint: fingerprint(2),
            ..completion(&corrected, "corrected")
        })
        .await
        .unwrap();
    assert!(
        matches!(kit.store.idempotency().claim(Principal::Platform, &key, fingerprint(2), policy()).await.unwrap(), ClaimOutcome::Replay(r) if &r.body[..] == b"corrected")
    );
}

pub async fn concurrent_claims_acquire_exactly_once(kit: &StoreKit) {
    let key = unique_key();
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (store, key, barrier) = (
            kit.store.idempotency().clone(),
            key.clone(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .claim(Principal::Platform, &key, fingerprint(1), policy())
                .await
                .unwrap()
        }));
    }
    let mut acquired = 0;
    for task in tasks {
        match task.await.unwrap() {
            ClaimOutcome::Acquired(_) => acquired += 1,
            ClaimOutcome::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acquired, 1);
}

/// A completion needs no claim before it: it takes a key nobody has used, and a finished key
/// is then refused to every other completion.
pub async fn a_completion_takes_a_free_key_and_only_once(kit: &StoreKit) {
    let key = unique_key();
    let fresh = || Claim {
        scope: Principal::Platform,
        key: key.clone(),
        token: ClaimToken::generate(),
    };
    let first = fresh();
    kit.store
        .idempotency()
        .complete(&completion(&first, "first"))
        .await
        .unwrap();
    assert!(matches!(
        kit.store
            .idempotency()
            .complete(&completion(&fresh(), "second"))
            .await,
        Err(Error::IdempotencyClaimLost)
    ));
    assert!(
        matches!(kit.store.idempotency().claim(Principal::Platform, &key, fingerprint(1), policy()).await.unwrap(), ClaimOutcome::Replay(r) if &r.body[..] == b"first")
    );
}

/// A completion takes a key from a claimant presumed dead, never from a live one.
pub async fn a_completion_takes_a_key_only_from_a_dead_holder(kit: &StoreKit) {
    let key = unique_key();
    let holder = acquired(kit, Principal::Platform, &key, 1).await;
    let other = Claim {
        token: ClaimToken::generate(),
        ..holder.clone()
    };
    assert!(matches!(
        kit.store
            .idempotency()
            .complete(&completion(&other, "early"))
            .await,
        Err(Error::IdempotencyClaimLost)
    ));
    kit.time
        .advance(policy().lock_timeout + Duration::from_secs(1))
        .await;
    kit.store
        .idempotency()
        .complete(&completion(&other, "late"))
        .await
        .unwrap();
    assert!(matches!(
        kit.store
            .idempotency()
            .complete(&completion(&holder, "dead"))
            .await,
        Err(Error::IdempotencyClaimLost)
    ));
    assert!(
        matches!(kit.store.idempotency().claim(Principal::Platform, &key, fingerprint(1), policy()).await.unwrap(), ClaimOutcome::Replay(r) if &r.body[..] == b"late")
    );
}

/// Generates the [`crate::ports::IdempotencyStore`] conformance tests for a `StoreKit` expression.
#[macro_export]
macro_rules! idempotency_store_conformance {
    ($kit:expr) => {
        $crate::conformance_tests!(
            idempotency,
            $kit,
            [
                a_completed_key_replays_its_response,
                a_different_request_under_the_same_key_is_refused,
                an_unfinished_key_is_in_progress,
                a_released_key_runs_anew,
                keys_are_scoped_to_their_caller,
                expired_keys_are_new_again_and_purged,
                a_dead_holder_is_taken_over_and_cannot_complete,
                a_dead_holder_does_not_block_a_corrected_request,
                a_completion_takes_a_free_key_and_only_once,
                a_completion_takes_a_key_only_from_a_dead_holder,
                concurrent_claims_acquire_exactly_once,
            ]
        );
    };
}
