//! The shared state behind [`MemoryStore`]: every table of the store in one value, behind one
//! mutex, so an operation that checks and then writes is atomic. The port implementations
//! live beside this file, one per port.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::account::Account;
use crate::api_key::{ApiKey, KeyHash};
use crate::error::{Error, Invariant, Result};
use crate::event::Event;
use crate::id::{
    AccountId, ApiKeyId, DeliveryId, EntryId, EventId, MerchantId, PaymentId, RefundId,
    TransactionId, WebhookEndpointId,
};
use crate::idempotency::{ClaimToken, Completion, Fingerprint, IdempotencyKey, StoredResponse};
use crate::ledger::{Entry, Transfer};
use crate::merchant::Merchant;
use crate::money::Currency;
use crate::payment::{Payment, PaymentStatus};
use crate::ports::LeaseId;
use crate::principal::{Owner, Principal};
use crate::refund::{Refund, RefundStatus};
use crate::time::{Clock, Timestamp};
use crate::webhook::{WebhookDelivery, WebhookEndpoint, deliveries_for};

/// The in-memory store: implements every store port and `LedgerAudit` over one shared state. Clones share the state.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            clock,
        }
    }

    pub(super) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Locks the state. A panic while it was held cannot have left a half-applied write:
    /// every operation checks everything before it changes anything.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(feature = "testkit")]
impl MemoryStore {
    /// Takes `amount` off a merchant account's balance without a journal entry, as a debit
    /// this version has no port for (a payout) would: the conformance kit's drain for
    /// TEST-MATRIX row 35. The journal no longer explains the balance afterwards (L4).
    pub fn testkit_drain(&self, account: AccountId, amount: crate::money::Amount) -> Result<()> {
        let mut state = self.lock();
        let account = state
            .accounts
            .get_mut(&account)
            .ok_or(Invariant::MissingReference)?;
        account.balance = account.apply(crate::ledger::Direction::Debit, amount)?;
        Ok(())
    }
}

/// A payment with the store's bookkeeping around it.
#[derive(Clone, Debug)]
pub(super) struct PaymentRow {
    pub(super) payment: Payment,
    /// The current hold: lease id and when it runs out.
    pub(super) lease: Option<(LeaseId, Timestamp)>,
    /// When it was last enqueued or claimed (the sweep waits `stale_after` from here).
    pub(super) touched_at: Timestamp,
    /// The attempt whose charge is being voided: the payment may only fail
    /// ([`crate::ports::LedgerStore::begin_void`]).
    pub(super) voiding: Option<LeaseId>,
}

/// A refund with the store's bookkeeping around it.
#[derive(Clone, Debug)]
pub(super) struct RefundRow {
    pub(super) refund: Refund,
    /// The current hold: lease id and when it runs out.
    pub(super) lease: Option<(LeaseId, Timestamp)>,
    /// When it was last enqueued or claimed.
    pub(super) touched_at: Timestamp,
}

/// One idempotency record.
#[derive(Clone, Debug)]
pub(super) struct IdemRecord {
    pub(super) fingerprint: Fingerprint,
    pub(super) token: ClaimToken,
    pub(super) locked_at: Timestamp,
    pub(super) expires_at: Timestamp,
    pub(super) response: Option<StoredResponse>,
}

impl IdemRecord {
    /// Whether this record keeps the key from others at `now`: it has not expired, and it is
    /// finished or its claimant is not yet presumed dead (held less than `lock_timeout`).
    pub(super) fn blocks(&self, now: Timestamp, lock_timeout: std::time::Duration) -> bool {
        self.expires_at > now
            && (self.response.is_some() || now.duration_since(self.locked_at) < lock_timeout)
    }
}

pub(super) type ScopedKey = (Principal, IdempotencyKey);

/// Every table.
#[derive(Default)]
pub(super) struct State {
    pub(super) accounts: HashMap<AccountId, Account>,
    pub(super) system_accounts: HashMap<Currency, AccountId>,
    pub(super) entries: BTreeMap<EntryId, Entry>,
    pub(super) account_entries: HashMap<AccountId, BTreeSet<EntryId>>,
    /// The one charge transaction of each posted payment.
    pub(super) transactions: HashMap<PaymentId, TransactionId>,
    pub(super) payments: BTreeMap<PaymentId, PaymentRow>,
    pub(super) owner_payments: HashMap<Owner, BTreeSet<PaymentId>>,
    /// Payments `PENDING` or `PROCESSING` (what the sweep looks at).
    pub(super) open_payments: BTreeSet<PaymentId>,
    /// Payments `AUTHORIZED` (what expiry looks at).
    pub(super) authorized: BTreeSet<PaymentId>,
    /// Every payment status change made, as (from, to).
    pub(super) transitions: Vec<(PaymentStatus, PaymentStatus)>,
    pub(super) refunds: BTreeMap<RefundId, RefundRow>,
    pub(super) owner_refunds: HashMap<Owner, BTreeSet<RefundId>>,
    /// Refunds `PENDING` or `PROCESSING`.
    pub(super) open_refunds: BTreeSet<RefundId>,
    /// The one transaction of each posted refund.
    pub(super) refund_transactions: HashMap<RefundId, TransactionId>,
    /// Every refund status change made, as (from, to).
    pub(super) refund_transitions: Vec<(RefundStatus, RefundStatus)>,
    pub(super) merchants: HashMap<MerchantId, Merchant>,
    pub(super) keys: BTreeMap<ApiKeyId, ApiKey>,
    pub(super) keys_by_hash: HashMap<KeyHash, ApiKeyId>,
    /// Idempotency records. One payment per key window is guarded here: a record completes
    /// once, in the same step as the payment it answers for.
    pub(super) idempotency: HashMap<ScopedKey, IdemRecord>,
    pub(super) events: BTreeMap<EventId, Event>,
    /// Each endpoint ever made, with whether it is deleted.
    pub(super) endpoints: BTreeMap<WebhookEndpointId, EndpointRow>,
    pub(super) deliveries: BTreeMap<DeliveryId, DeliveryRow>,
}

/// A webhook endpoint; a deleted one stays, for its deliveries.
#[derive(Clone, Debug)]
pub(super) struct EndpointRow {
    pub(super) endpoint: WebhookEndpoint,
    /// When it was deleted, if it was.
    pub(super) deleted: Option<Timestamp>,
}

/// A delivery with the hold of the attempt being made.
#[derive(Clone, Debug)]
pub(super) struct DeliveryRow {
    pub(super) delivery: WebhookDelivery,
    pub(super) lease: Option<(LeaseId, Timestamp)>,
}

impl State {
    /// Writes `event` (if the change has one) and its deliveries to the endpoints that exist
    /// now: the outbox half of a state change, in the same critical section.
    pub(super) fn write_events(&mut self, event: Option<Event>) {
        let Some(event) = event else {
            return;
        };
        let live: Vec<WebhookEndpoint> = self
            .endpoints
            .values()
            .filter(|row| row.deleted.is_none())
            .map(|row| row.endpoint.clone())
            .collect();
        for delivery in deliveries_for(std::slice::from_ref(&event), &live) {
            let row = DeliveryRow {
                delivery,
                lease: None,
            };
            self.deliveries.insert(row.delivery.id, row);
        }
        self.events.insert(event.id, event);
    }

    /// Checks that `completion` may be written at `now`: its key is free to take or held
    /// unfinished by its own token (the rule of [`Completion`]).
    pub(super) fn check_completion(
        &self,
        completion: Option<&Completion>,
        now: Timestamp,
    ) -> Result<()> {
        let Some(completion) = completion else {
            return Ok(());
        };
        let claim = &completion.claim;
        match self.idempotency.get(&(claim.scope, claim.key.clone())) {
            Some(record)
                if record.blocks(now, completion.policy.lock_timeout)
                    && !(record.token == claim.token && record.response.is_none()) =>
            {
                Err(Error::IdempotencyClaimLost)
            }
            _ => Ok(()),
        }
    }

    /// Writes a completion checked by [`State::check_completion`]: the key, finished.
    pub(super) fn apply_completion(&mut self, completion: Option<Completion>, now: Timestamp) {
        let Some(completion) = completion else {
            return;
        };
        let Completion {
            claim,
            fingerprint,
            policy,
            response,
        } = completion;
        self.idempotency.insert(
            (claim.scope, claim.key),
            IdemRecord {
                fingerprint,
                token: claim.token,
                locked_at: now,
                expires_at: now.saturating_add(policy.ttl),
                response: Some(response),
            },
        );
    }

    /// Posts `transfer`: both entries and both balances, all computed before any is changed;
    /// refuses a balance that would go below zero where it may not, or overflow.
    pub(super) fn post(&mut self, transfer: &Transfer) -> Result<()> {
        let mut balances = HashMap::new();
        for entry in transfer.entries() {
            if self.entries.contains_key(&entry.id) {
                return Err(Invariant::DuplicateId.into());
            }
            let account = self
                .accounts
                .get(&entry.account_id)
                .ok_or(Invariant::MissingReference)?;
            if account.currency != transfer.currency() {
                return Err(Invariant::PostingMismatch.into());
            }
            balances.insert(account.id, account.apply(entry.direction, entry.amount)?);
        }
        for entry in transfer.entries() {
            self.account_entries
                .entry(entry.account_id)
                .or_default()
                .insert(entry.id);
            self.entries.insert(entry.id, entry);
        }
        for (id, balance) in balances {
            if let Some(account) = self.accounts.get_mut(&id) {
                account.balance = balance;
            }
        }
        Ok(())
    }

    pub(super) fn ensure_new_account_id(&self, id: AccountId) -> Result<()> {
        if self.accounts.contains_key(&id) {
            return Err(Invariant::DuplicateId.into());
        }
        Ok(())
    }

    pub(super) fn insert_account(&mut self, account: Account) {
        self.account_entries.entry(account.id).or_default();
        self.accounts.insert(account.id, account);
    }

    pub(super) fn ensure_new_key(&self, key: &ApiKey) -> Result<()> {
        if self.keys.contains_key(&key.id) || self.keys_by_hash.contains_key(&key.hash) {
            return Err(Invariant::DuplicateId.into());
        }
        Ok(())
    }

    pub(super) fn insert_key(&mut self, key: ApiKey) {
        self.keys_by_hash.insert(key.hash, key.id);
        self.keys.insert(key.id, key);
    }
}

/// Takes up to `limit + 1` ids older than `cursor` from an ordered set, newest first, keeping
/// those `keep` accepts.
pub(super) fn newest_first<'a, K: Ord + Copy + 'a>(
    ids: impl DoubleEndedIterator<Item = &'a K>,
    limit: usize,
    mut keep: impl FnMut(&K) -> bool,
) -> Vec<K> {
    ids.rev()
        .filter(|id| keep(id))
        .take(limit + 1)
        .copied()
        .collect()
}

/// A page of `table`'s rows, newest first, that `visible` and `keep` accept. A cursor that is
/// not a row `visible` accepts is [`Error::UnknownCursor`].
pub(super) fn page_of<K: Ord + Copy, V: Clone>(
    table: &BTreeMap<K, V>,
    page: crate::page::PageRequest<K>,
    visible: impl Fn(&V) -> bool,
    keep: impl Fn(&V) -> bool,
) -> Result<crate::page::Page<V>> {
    if page
        .starting_after
        .is_some_and(|cursor| !table.get(&cursor).is_some_and(&visible))
    {
        return Err(Error::UnknownCursor);
    }
    let rows = match page.starting_after {
        Some(cursor) => table.range(..cursor),
        None => table.range(..),
    };
    let items = rows
        .rev()
        .map(|(_, row)| row)
        .filter(|row| visible(row) && keep(row))
        .take(page.limit.get() + 1)
        .cloned()
        .collect();
    Ok(crate::page::Page::from_overfetch(items, page.limit))
}
