-- Atomic's store of record: merchants, accounts, payments, the double-entry ledger, API keys and
-- idempotency records. The constraints and triggers below guard the books on their own: code
-- that tries to break an invariant is refused by the database, not only by the core's types.

-- Merchants own accounts and keys. `primary_account` is checked at commit, because a merchant
-- and its first account are written together and each references the other.
CREATE TABLE merchants (
    id              uuid PRIMARY KEY,
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    primary_account uuid NOT NULL,
    created_at      timestamptz NOT NULL
);

-- One system ("World") account per currency is the DEBIT side of every payment and may go
-- negative; every other account may not (TEST-MATRIX L5).
CREATE TABLE accounts (
    id             uuid PRIMARY KEY,
    name           text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    currency       char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    kind           text NOT NULL CHECK (kind IN ('system', 'merchant')),
    owner_merchant uuid REFERENCES merchants (id),
    balance        bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    CONSTRAINT accounts_system_unowned CHECK (kind = 'merchant' OR owner_merchant IS NULL),
    CONSTRAINT accounts_non_negative CHECK (kind = 'system' OR balance >= 0),
    -- Targets of the composite foreign keys that tie payments and entries to the currency.
    CONSTRAINT accounts_id_currency UNIQUE (id, currency)
);
CREATE UNIQUE INDEX accounts_one_system_per_currency ON accounts (currency) WHERE kind = 'system';
CREATE INDEX accounts_owner ON accounts (owner_merchant, id);

ALTER TABLE merchants ADD CONSTRAINT merchants_primary_account_fkey
    FOREIGN KEY (primary_account) REFERENCES accounts (id) DEFERRABLE INITIALLY DEFERRED;

-- API keys are stored as SHA-256 hashes only; a hash names one key.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    merchant_id uuid NOT NULL REFERENCES merchants (id),
    prefix      text NOT NULL,
    hash        bytea NOT NULL CHECK (octet_length(hash) = 32),
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CONSTRAINT api_keys_hash_unique UNIQUE (hash)
);
CREATE INDEX api_keys_merchant ON api_keys (merchant_id, id);

-- Idempotency records, unique per (scope, key). The scope is the caller: a merchant id, or the
-- nil UUID for the platform. `token` proves the hold of an unfinished claim; a finished record
-- carries the stored response.
CREATE TABLE idempotency_keys (
    scope           uuid NOT NULL,
    key             text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    fingerprint     bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    token           uuid NOT NULL,
    locked_at       timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    response_status smallint CHECK (response_status BETWEEN 100 AND 599),
    response_body   bytea,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key),
    CONSTRAINT idempotency_keys_response_whole
        CHECK ((response_status IS NULL) = (response_body IS NULL))
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- Payments. Status and failure reason agree (a reason exactly when FAILED); a lease exists only
-- while PROCESSING; the amount is integer minor units in the payment range (L9); both accounts
-- share the payment's currency (composite foreign keys, L10). `idempotency_token` is the claim
-- that created the payment: one payment per claim, so one per key and window (L8).
CREATE TABLE payments (
    id                uuid PRIMARY KEY,
    merchant_account  uuid NOT NULL,
    funding_account   uuid NOT NULL,
    owner_merchant    uuid REFERENCES merchants (id),
    amount            bigint NOT NULL CHECK (amount > 0 AND amount <= 99999999),
    currency          char(3) NOT NULL,
    source            text NOT NULL,
    description       text NOT NULL,
    idempotency_key   text,
    idempotency_token uuid,
    created_by        uuid,
    status            text NOT NULL
        CHECK (status IN ('PENDING', 'PROCESSING', 'SUCCESS', 'FAILED')),
    failure_reason    text
        CHECK (failure_reason IN ('card_declined', 'insufficient_funds', 'processing_error')),
    lease_id          uuid,
    lease_until       timestamptz,
    touched_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    CONSTRAINT payments_reason_iff_failed CHECK ((status = 'FAILED') = (failure_reason IS NOT NULL)),
    CONSTRAINT payments_lease_iff_processing
        CHECK ((status = 'PROCESSING') = (lease_id IS NOT NULL AND lease_until IS NOT NULL)),
    CONSTRAINT payments_merchant_account_fkey
        FOREIGN KEY (merchant_account, currency) REFERENCES accounts (id, currency),
    CONSTRAINT payments_funding_account_fkey
        FOREIGN KEY (funding_account, currency) REFERENCES accounts (id, currency),
    CONSTRAINT payments_one_per_claim UNIQUE (idempotency_token),
    -- Target of the ledger's composite foreign key.
    CONSTRAINT payments_id_amount UNIQUE (id, amount, currency)
);
CREATE INDEX payments_owner ON payments (owner_merchant, id);
CREATE INDEX payments_owner_status ON payments (owner_merchant, status, id);
CREATE INDEX payments_status ON payments (status, id);
CREATE INDEX payments_open ON payments (touched_at) WHERE status IN ('PENDING', 'PROCESSING');

-- A payment's accounts are the right kinds and belong to its owner (L10).
CREATE FUNCTION payments_check_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM accounts
        WHERE id = NEW.merchant_account AND kind = 'merchant'
          AND owner_merchant IS NOT DISTINCT FROM NEW.owner_merchant
    ) OR NOT EXISTS (
        SELECT 1 FROM accounts WHERE id = NEW.funding_account AND kind = 'system'
    ) THEN
        RAISE EXCEPTION 'payment % accounts disagree with its owner or kinds', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_accounts_consistent';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER payments_check_accounts BEFORE INSERT ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_check_accounts();

-- A payment is born PENDING and only moves along the state machine (L6):
-- PENDING -> PROCESSING -> SUCCESS | FAILED; PROCESSING -> PROCESSING renews a lease. What a
-- payment is (accounts, owner, amount, currency, source, key) never changes after insert.
CREATE FUNCTION payments_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ((OLD.status = NEW.status AND NEW.status IN ('PENDING', 'PROCESSING'))
         OR (OLD.status = 'PENDING' AND NEW.status = 'PROCESSING')
         OR (OLD.status = 'PROCESSING' AND NEW.status IN ('SUCCESS', 'FAILED'))) THEN
        RAISE EXCEPTION 'illegal payment transition % -> %', OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_legal_transition';
    END IF;
    IF (NEW.id, NEW.merchant_account, NEW.funding_account, NEW.owner_merchant, NEW.amount,
        NEW.currency, NEW.source, NEW.idempotency_key, NEW.idempotency_token, NEW.created_by,
        NEW.created_at)
       IS DISTINCT FROM
       (OLD.id, OLD.merchant_account, OLD.funding_account, OLD.owner_merchant, OLD.amount,
        OLD.currency, OLD.source, OLD.idempotency_key, OLD.idempotency_token, OLD.created_by,
        OLD.created_at) THEN
        RAISE EXCEPTION 'payment % is immutable but for its status', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_immutable';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER payments_guard_update BEFORE UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_guard_update();

CREATE FUNCTION payments_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'payments are never deleted'
        USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_permanent';
END $$;
CREATE TRIGGER payments_refuse_delete BEFORE DELETE ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_refuse_delete();

-- The ledger. A transaction is one payment's posting: UNIQUE per payment, so a second posting
-- is impossible even under a bug or a replayed job (L3). Its amount and currency are the
-- payment's (composite foreign key); its accounts are the payment's (checked below).
CREATE TABLE ledger_transactions (
    id             uuid PRIMARY KEY,
    payment_id     uuid NOT NULL,
    debit_account  uuid NOT NULL,
    credit_account uuid NOT NULL,
    amount         bigint NOT NULL CHECK (amount > 0),
    currency       char(3) NOT NULL,
    created_at     timestamptz NOT NULL,
    CONSTRAINT ledger_transactions_one_per_payment UNIQUE (payment_id),
    CONSTRAINT ledger_transactions_payment_fkey
        FOREIGN KEY (payment_id, amount, currency) REFERENCES payments (id, amount, currency),
    CONSTRAINT ledger_transactions_distinct_accounts CHECK (debit_account <> credit_account),
    CONSTRAINT ledger_transactions_debit_fkey
        FOREIGN KEY (debit_account, currency) REFERENCES accounts (id, currency),
    CONSTRAINT ledger_transactions_credit_fkey
        FOREIGN KEY (credit_account, currency) REFERENCES accounts (id, currency),
    -- Target of the entries' composite foreign key.
    CONSTRAINT ledger_transactions_shape UNIQUE (id, payment_id, amount, currency)
);

-- Entries: one DEBIT and one CREDIT per transaction (unique per direction), each of the
-- transaction's amount, currency and payment (composite foreign key). Append-only (L7).
CREATE TABLE ledger_entries (
    id             uuid PRIMARY KEY,
    transaction_id uuid NOT NULL,
    payment_id     uuid NOT NULL,
    account_id     uuid NOT NULL,
    direction      text NOT NULL CHECK (direction IN ('DEBIT', 'CREDIT')),
    amount         bigint NOT NULL CHECK (amount > 0),
    currency       char(3) NOT NULL,
    created_at     timestamptz NOT NULL,
    CONSTRAINT ledger_entries_one_per_side UNIQUE (transaction_id, direction),
    CONSTRAINT ledger_entries_transaction_fkey
        FOREIGN KEY (transaction_id, payment_id, amount, currency)
        REFERENCES ledger_transactions (id, payment_id, amount, currency),
    CONSTRAINT ledger_entries_account_fkey
        FOREIGN KEY (account_id, currency) REFERENCES accounts (id, currency)
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);

-- At commit, every transaction written has both sides on the right accounts, and its payment is
-- SUCCESS; a SUCCESS payment has its transaction (L2, L3). Deferred, because the rows of one
-- posting are written by several statements of one database transaction.
CREATE FUNCTION ledger_check_transaction(tx uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t ledger_transactions;
    sides int;
BEGIN
    SELECT * INTO t FROM ledger_transactions WHERE id = tx;
    SELECT count(*) INTO sides FROM ledger_entries e
    WHERE e.transaction_id = tx
      AND ((e.direction = 'DEBIT' AND e.account_id = t.debit_account)
        OR (e.direction = 'CREDIT' AND e.account_id = t.credit_account));
    IF sides <> 2 OR (SELECT count(*) FROM ledger_entries WHERE transaction_id = tx) <> 2 THEN
        RAISE EXCEPTION 'ledger transaction % is not one DEBIT and one CREDIT', tx
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM payments p
        WHERE p.id = t.payment_id AND p.status = 'SUCCESS'
          AND p.funding_account = t.debit_account AND p.merchant_account = t.credit_account
    ) THEN
        RAISE EXCEPTION 'ledger transaction % does not post a SUCCESS payment', tx
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_posts_success';
    END IF;
END $$;

CREATE FUNCTION ledger_transactions_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_check_transaction(NEW.id);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_transactions_check AFTER INSERT ON ledger_transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_transactions_check();

CREATE FUNCTION ledger_entries_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_check_transaction(NEW.transaction_id);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_entries_check AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_entries_check();

CREATE FUNCTION payments_check_posting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'SUCCESS'
       AND NOT EXISTS (SELECT 1 FROM ledger_transactions WHERE payment_id = NEW.id) THEN
        RAISE EXCEPTION 'payment % is SUCCESS without a ledger transaction', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_success_is_posted';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER payments_check_posting AFTER UPDATE OF status ON payments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.status = 'SUCCESS') EXECUTE FUNCTION payments_check_posting();

-- The ledger is append-only (L7): corrections are new entries, never edits.
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME
        USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_append_only';
END $$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_transactions_no_truncate BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
