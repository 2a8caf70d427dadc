//! Property tests. The main one is the model-based test of the whole money path (the model
//! is in `model/mod.rs`, shared with atomic-postgres's `tests/model.rs`) on the in-memory
//! adapters, against a manual clock: one job per worker step, no bursts, durations as
//! configured. The others are plain properties of pure pieces.
//!
//! `PROPTEST_CASES` overrides the number of cases (default 256; 512 for the money path, whose
//! generator must reach every path it lists) and `PROPTEST_RNG_SEED` the
//! fixed seed, so a run is reproducible.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on the unexpected

mod model;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;

use atomic_core::idempotency::{IdempotencyKey, MAX_KEY_LEN};
use atomic_core::memory::MemoryStore;
use atomic_core::testkit::{StoreKit, TimeTravel};
use atomic_core::time::ManualClock;
use atomic_core::{Amount, MAX_PAYMENT_AMOUNT, Timestamp};

// ---------------------------------------------------------------------------------------------
// Plain properties of pure pieces (not covered by the crate's own unit tests)
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(model::config(256, None))]

    /// `Amount::for_payment` accepts exactly 1..=MAX_PAYMENT_AMOUNT, for any i64, and keeps the
    /// value it accepts.
    #[test]
    fn amount_for_payment_accepts_exactly_one_to_max(
        n in prop_oneof![
            any::<i64>(),
            -3i64..=3,
            (MAX_PAYMENT_AMOUNT - 3)..=(MAX_PAYMENT_AMOUNT + 3),
            Just(i64::MIN),
            Just(i64::MAX),
        ]
    ) {
        let accepted = Amount::for_payment(n);
        prop_assert_eq!(accepted.is_ok(), (1..=MAX_PAYMENT_AMOUNT).contains(&n), "{}", n);
        if let Ok(amount) = accepted {
            prop_assert_eq!(amount.minor_units(), n);
        }
    }

    /// Any printable-ASCII key of 1..=255 characters, written as an RFC 8941 string (quoted,
    /// with `\"` and `\\` escapes), reads back as itself; written bare it reads back as itself
    /// too unless it starts or ends with a quote.
    #[test]
    fn idempotency_key_header_round_trips_rfc8941_strings(key in "[ -~]{1,255}") {
        let quoted = format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""));
        let parsed = IdempotencyKey::from_header(&quoted);
        prop_assert_eq!(parsed.as_ref().map(IdempotencyKey::as_str), Ok(key.as_str()));
        if !key.starts_with('"') && !key.ends_with('"') {
            let bare = IdempotencyKey::from_header(&key);
            prop_assert_eq!(bare.as_ref().map(IdempotencyKey::as_str), Ok(key.as_str()));
        }
    }

    /// `IdempotencyKey::parse` accepts a string exactly when it has 1..=255 bytes, all
    /// printable ASCII.
    #[test]
    fn idempotency_key_parse_accepts_exactly_printable_ascii_up_to_255(
        key in prop_oneof![
            "[ -~]{0,260}",
            "[ -~]{253,258}",
            "[ -~]{0,20}[\\x00-\\x1f\\x7f\u{80}-\u{10ffff}][ -~]{0,20}",
            any::<String>(),
        ]
    ) {
        let valid = (1..=MAX_KEY_LEN).contains(&key.len())
            && key.bytes().all(|b| (0x20..=0x7e).contains(&b));
        prop_assert_eq!(IdempotencyKey::parse(key.clone()).is_ok(), valid, "{:?}", key);
    }
}

// ---------------------------------------------------------------------------------------------
// The money path on the in-memory adapters
// ---------------------------------------------------------------------------------------------

/// The in-memory store, on the case's manual clock.
struct Memory;

/// The in-memory store decides with the manual clock, which the runner moves itself.
struct ClockOnly;

#[async_trait]
impl TimeTravel for ClockOnly {
    async fn advance(&self, _: Duration) {}
}

impl model::Backend for Memory {
    const CASES: u32 = 512;
    const MAX_SHRINK_ITERS: Option<u32> = None;
    const SCALE: u32 = 1;
    const BATCH: usize = 1;
    const BURSTS: bool = false;

    fn start() -> Timestamp {
        Timestamp::from_unix_micros(1_767_225_600_000_000).expect("a valid instant")
    }

    async fn store(clock: Arc<ManualClock>) -> StoreKit {
        StoreKit::new(Arc::new(MemoryStore::new(clock)), Arc::new(ClockOnly))
    }

    fn services_clock(clock: Arc<ManualClock>) -> Arc<dyn atomic_core::Clock> {
        clock
    }
}

/// The in-memory store with the worker taking several jobs at once and bursts of concurrent
/// submits, so mixed batches (charges, authorizations, captures and refunds settled in one
/// call) are model-checked too.
struct MemoryBatched;

impl model::Backend for MemoryBatched {
    const CASES: u32 = 256;
    const MAX_SHRINK_ITERS: Option<u32> = None;
    const SCALE: u32 = 1;
    const BATCH: usize = 4;
    const BURSTS: bool = true;

    fn start() -> Timestamp {
        Memory::start()
    }

    async fn store(clock: Arc<ManualClock>) -> StoreKit {
        Memory::store(clock).await
    }

    fn services_clock(clock: Arc<ManualClock>) -> Arc<dyn atomic_core::Clock> {
        clock
    }
}

/// The money path against its model, several jobs per worker step.
#[test]
fn money_path_in_batches_matches_the_model_and_keeps_the_books() {
    model::run::<MemoryBatched>(
        "the in-memory adapters, in batches",
        &[
            "batch: several settled together",
            "batch: payments and refunds settled together",
            "burst: submitted together",
            "worker: capture settled",
            "worker: refund settled SUCCESS",
            "sweep: expired",
        ],
    );
}

/// The money path against its model (payments, captures, cancels, refunds and expiries): every
/// step checked, then healed, drained and audited.
#[test]
fn money_path_matches_the_model_and_keeps_the_books() {
    model::run::<Memory>(
        "the in-memory adapters",
        &[
            "claim: acquired",
            "claim: replay",
            "claim: mismatch",
            "claim: in progress",
            "claim: taken over",
            "refused: validation",
            "refused: not found",
            "refused: forbidden",
            "refused: currency mismatch",
            "late submit: held or free",
            "late submit: lost",
            "worker: settled SUCCESS",
            "worker: settled FAILED",
            "worker: already finished",
            "worker: busy",
            "worker: missing",
            "worker: settled on its last attempt",
            "crash after claim",
            "crash after commit",
            "redelivery",
            "sweep: requeued",
            "queue lost",
            "worker: settled AUTHORIZED",
            "worker: capture settled",
            "worker: refund settled SUCCESS",
            "capture: part",
            "capture: whole",
            "capture: not found",
            "capture: invalid state",
            "capture: too late",
            "capture: exceeds",
            "cancel: accepted",
            "cancel: invalid state",
            "refund: accepted",
            "refund: rest",
            "refund: exceeds",
            "refund: nothing left",
            "refund: invalid state",
            "refund: not found",
            "sweep: requeued capture",
            "sweep: requeued refund",
            "sweep: expired",
            "crash after claim: capture",
            "crash after claim: refund",
        ],
    );
}
