//! The books check, through the API only, set-based (one pass over each list, hash lookups, so
//! it stays cheap at 100k payments): for each merchant of the run,
//! - every payment the run was answered 202 for is stored (a missing one is looked up by id,
//!   so a lost acknowledgement is told apart from a payment still open), ended as its card
//!   token says, with the amount and merchant account it was sent with;
//! - every entry on the merchant's account is the CREDIT of a `SUCCESS` payment of that
//!   account, of that payment's amount; every `SUCCESS` payment has one;
//! - its balance equals the sum of its `SUCCESS` payments, and its journal (CREDITs minus
//!   DEBITs of its entries);
//! - nothing is left open.
//!
//! A second posting of a payment is not looked for: `UNIQUE (payment_id)` on the ledger
//! forbids it, and it would show in the balance anyway. The DEBIT side (the World account) is
//! not visible to a merchant key; the server's books audit covers it.
//! The terminal payments' `updatedAt` stamps are kept: they give the exact settlement timeline
//! (server clock) for the report.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::client::{Api, EntryView, Failure, Key, Merchant, OPEN_STATUSES, PaymentView};
use crate::run::Accepted;

/// Accepted payments missing from the lists that are looked up one by one (to say why).
const MISSING_LOOKUPS: usize = 100;

/// What the books check found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Books {
    /// Problems that break the books (empty: the books are right).
    pub(crate) problems: Vec<String>,
    /// Things worth knowing that do not break the books.
    pub(crate) notes: Vec<String>,
    /// `SUCCESS` payments over all merchants.
    pub(crate) success: u64,
    /// `FAILED` payments over all merchants.
    pub(crate) failed: u64,
    /// Sum of the merchants' balances.
    pub(crate) balance: i64,
    /// Ledger entries on the merchants' accounts.
    pub(crate) entries: u64,
    /// API requests the check spent.
    pub(crate) requests: u64,
    /// `updatedAt` (µs since the epoch) of each of the run's payments that ended.
    pub(crate) terminal_times: Vec<i64>,
}

impl Books {
    /// Whether the books are right.
    pub(crate) fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the books of every merchant; a request that fails is itself a problem.
pub(crate) async fn check(api: &Api, merchants: &[Merchant], accepted: &[Accepted]) -> Books {
    let mut books = Books::default();
    let mut by_merchant: HashMap<u32, HashMap<Uuid, Accepted>> = HashMap::new();
    for a in accepted {
        by_merchant.entry(a.merchant).or_default().insert(a.id, *a);
    }
    for (index, merchant) in merchants.iter().enumerate() {
        let ours = by_merchant.remove(&(index as u32)).unwrap_or_default();
        if let Err(failure) = check_merchant(api, index, merchant, &ours, &mut books).await {
            books.problems.push(format!(
                "merchant {index}: could not read its books: {failure}"
            ));
        }
    }
    books
}

/// One merchant under check, and the run's payments to it.
struct MerchantCheck<'a> {
    api: &'a Api,
    /// Its place in the run's merchant list; problems name it by this.
    index: usize,
    merchant: &'a Merchant,
    /// The run's accepted payments to this merchant, by id.
    ours: &'a HashMap<Uuid, Accepted>,
}

/// What the API shows of one merchant's books.
struct MerchantLists {
    /// Its `SUCCESS` payments.
    success: Vec<PaymentView>,
    /// Its `FAILED` payments.
    failed: Vec<PaymentView>,
    /// Its account's balance.
    balance: i64,
    /// The ledger entries on its account.
    entries: Vec<EntryView>,
}

/// Checks one merchant's books (the rules in the module doc), adding what it finds to `books`;
/// a request that fails ends the check with that failure.
async fn check_merchant(
    api: &Api,
    index: usize,
    merchant: &Merchant,
    ours: &HashMap<Uuid, Accepted>,
    books: &mut Books,
) -> Result<(), Failure> {
    let check = MerchantCheck {
        api,
        index,
        merchant,
        ours,
    };
    check.nothing_left_open(books).await?;
    let lists = check.read_lists(&mut books.requests).await?;
    check.balance_matches_payments(&lists, books);
    check.entries_match_payments(&lists, books);
    let seen = check.run_payments_ended_as_sent(&lists, books);
    if seen < ours.len() {
        check.report_missing_payments(&lists, books).await?;
    }
    books.success += lists.success.len() as u64;
    books.failed += lists.failed.len() as u64;
    books.balance += lists.balance;
    books.entries += lists.entries.len() as u64;
    Ok(())
}

impl MerchantCheck<'_> {
    /// No payment of the merchant is left in an open status.
    async fn nothing_left_open(&self, books: &mut Books) -> Result<(), Failure> {
        let index = self.index;
        for status in OPEN_STATUSES {
            books.requests += 1;
            let page = self
                .api
                .payments(&self.merchant.key, status, 1, None)
                .await?;
            if !page.items.is_empty() {
                books
                    .problems
                    .push(format!("merchant {index}: payments still {status}"));
            }
        }
        Ok(())
    }

    /// Reads the merchant's terminal payments, balance and entries, counting the requests.
    async fn read_lists(&self, requests: &mut u64) -> Result<MerchantLists, Failure> {
        let (api, key, account) = (self.api, &self.merchant.key, self.merchant.account);
        let success = all_payments(api, key, "SUCCESS", requests).await?;
        let failed = all_payments(api, key, "FAILED", requests).await?;
        *requests += 1;
        let balance = api.account(key, account).await?.balance;
        let entries = all_entries(api, key, account, requests).await?;
        Ok(MerchantLists {
            success,
            failed,
            balance,
            entries,
        })
    }

    /// The balance equals the sum of the merchant's `SUCCESS` payments.
    fn balance_matches_payments(&self, lists: &MerchantLists, books: &mut Books) {
        let (index, balance) = (self.index, lists.balance);
        let success_sum: i64 = lists.success.iter().map(|p| p.amount).sum();
        if balance != success_sum {
            books.problems.push(format!(
                "merchant {index}: balance {balance} but its SUCCESS payments sum to {success_sum}"
            ));
        }
    }

    /// Each entry is the CREDIT of one of this account's `SUCCESS` payments, of its amount;
    /// every `SUCCESS` payment has one; the entries (CREDITs minus DEBITs) add up to the
    /// balance.
    fn entries_match_payments(&self, lists: &MerchantLists, books: &mut Books) {
        let (index, balance, account) = (self.index, lists.balance, self.merchant.account);
        let success_amounts: HashMap<Uuid, i64> = lists
            .success
            .iter()
            .filter(|p| p.merchant_id == account)
            .map(|p| (p.id, p.amount))
            .collect();
        let mut posted: HashSet<Uuid> = HashSet::new();
        let mut stray = 0u64;
        let mut journal = 0i64;
        for entry in &lists.entries {
            journal += match entry.direction.as_str() {
                "CREDIT" => entry.amount,
                _ => -entry.amount,
            };
            let expected = success_amounts.get(&entry.payment_id);
            let right = entry.direction == "CREDIT"
                && entry.account_id == account
                && expected == Some(&entry.amount);
            if right {
                posted.insert(entry.payment_id);
            } else {
                stray += 1;
            }
        }
        if journal != balance {
            books.problems.push(format!(
                "merchant {index}: balance {balance} but its entries add up to {journal}"
            ));
        }
        if stray > 0 {
            books.problems.push(format!(
                "merchant {index}: {stray} entr(ies) are not the CREDIT of a SUCCESS payment of this account, of its amount"
            ));
        }
        let unposted = lists
            .success
            .iter()
            .filter(|p| !posted.contains(&p.id))
            .count();
        if unposted > 0 {
            books.problems.push(format!(
                "merchant {index}: {unposted} SUCCESS payment(s) without their CREDIT entry"
            ));
        }
    }

    /// Each of the run's payments in the lists ended as its token says, with the amount and
    /// merchant account it was sent with; keeps its `updatedAt` for the timeline. A listed
    /// payment the run was not answered 202 for is a note. Returns how many of the run's
    /// payments the lists hold.
    fn run_payments_ended_as_sent(&self, lists: &MerchantLists, books: &mut Books) -> usize {
        let index = self.index;
        let mut wrong = 0u64;
        let mut seen = 0usize;
        for (payment, ended_ok) in lists
            .success
            .iter()
            .map(|p| (p, true))
            .chain(lists.failed.iter().map(|p| (p, false)))
        {
            match self.ours.get(&payment.id) {
                Some(a) => {
                    seen += 1;
                    if a.succeeds != ended_ok || a.amount != payment.amount {
                        wrong += 1;
                    }
                    if payment.merchant_id != self.merchant.account {
                        wrong += 1;
                    }
                    if let Some(t) = parse_timestamp(&payment.updated_at) {
                        books.terminal_times.push(t);
                    }
                }
                None => books.notes.push(format!(
                    "merchant {index}: payment {} was not answered 202 to this run (a timed-out request?)",
                    payment.id
                )),
            }
        }
        if wrong > 0 {
            books.problems.push(format!(
                "merchant {index}: {wrong} payment(s) ended otherwise than their token and amount say"
            ));
        }
        seen
    }

    /// The run's payments missing from both lists are a problem. The first
    /// [`MISSING_LOOKUPS`] of them are looked up one by one, to tell a 202 that was not
    /// durable (not stored) from a payment still open or one the lists left out.
    async fn report_missing_payments(
        &self,
        lists: &MerchantLists,
        books: &mut Books,
    ) -> Result<(), Failure> {
        let index = self.index;
        let listed: HashSet<Uuid> = lists
            .success
            .iter()
            .chain(&lists.failed)
            .map(|p| p.id)
            .collect();
        let missing: Vec<Uuid> = self
            .ours
            .keys()
            .filter(|id| !listed.contains(id))
            .copied()
            .collect();
        let (mut lost, mut open, mut elsewhere) = (Vec::new(), 0usize, 0usize);
        for id in missing.iter().take(MISSING_LOOKUPS) {
            books.requests += 1;
            match self.api.payment(&self.merchant.key, *id).await {
                Err(Failure::Status { status: 404, .. }) => lost.push(*id),
                Ok(p) if !p.is_terminal() => open += 1,
                Ok(_) => elsewhere += 1,
                Err(failure) => return Err(failure),
            }
        }
        books.problems.push(format!(
            "merchant {index}: {} accepted payment(s) are neither SUCCESS nor FAILED; of the \
             first {} looked up, {} are not stored at all (202 not durable: {:?}), {open} are \
             still open and {elsewhere} ended but are missing from the lists",
            missing.len(),
            missing.len().min(MISSING_LOOKUPS),
            lost.len(),
            &lost[..lost.len().min(5)],
        ));
        Ok(())
    }
}

async fn all_payments(
    api: &Api,
    key: &Key,
    status: &str,
    requests: &mut u64,
) -> Result<Vec<PaymentView>, Failure> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        *requests += 1;
        let page = api.payments(key, status, 100, after).await?;
        let more = page.has_more;
        after = page.items.last().map(|p| p.id);
        all.extend(page.items);
        if !more || after.is_none() {
            return Ok(all);
        }
    }
}

async fn all_entries(
    api: &Api,
    key: &Key,
    account: Uuid,
    requests: &mut u64,
) -> Result<Vec<EntryView>, Failure> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        *requests += 1;
        let page = api.entries(key, account, after).await?;
        let more = page.has_more;
        after = page.items.last().map(|e| e.id);
        all.extend(page.items.into_iter().map(|e| e.entry));
        if !more || after.is_none() {
            return Ok(all);
        }
    }
}

/// Parses the API's RFC 3339 UTC timestamps (`2026-01-02T03:04:05.123456Z`, fraction optional)
/// into microseconds since the Unix epoch.
pub(crate) fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, fraction) = match time.split_once('.') {
        Some((hms, f)) => (hms, f),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let micros = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction.chars().take(6).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i64>().ok()? * 10i64.pow(6 - digits.len() as u32)
    };
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_unix_micros() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00.000000Z"), Some(0));
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z"), Some(1_000_000));
        // 2024-02-29 12:34:56.789 UTC = 1709210096.789
        assert_eq!(
            parse_timestamp("2024-02-29T12:34:56.789Z"),
            Some(1_709_210_096_789_000)
        );
        assert_eq!(
            parse_timestamp("2026-11-25T00:00:00.000001Z"),
            Some(1_795_564_800_000_001)
        );
        for bad in [
            "",
            "2024-02-29 12:34:56Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "x",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
