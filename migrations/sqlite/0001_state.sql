-- The action ledger: one row per idempotency key, ever.
CREATE TABLE IF NOT EXISTS ledger (
    key           TEXT PRIMARY KEY,
    status        TEXT NOT NULL,          -- claimed | done | failed
    owner         TEXT,                   -- the worker holding a claim
    claimed_until INTEGER NOT NULL DEFAULT 0, -- ms since epoch; a claim past this is recoverable
    updated_at    INTEGER NOT NULL
);

-- Grace-period checks: one row per payment, ever ("first seen authorized" happens once).
CREATE TABLE IF NOT EXISTS timers (
    payment_id  TEXT PRIMARY KEY,
    due         INTEGER NOT NULL,         -- ms since epoch
    state       TEXT NOT NULL,            -- pending | taken | done
    taken_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS timers_pending ON timers (state, due);

-- Processed message ids, for dedupe; expired rows are purged.
CREATE TABLE IF NOT EXISTS processed (
    message_id TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS processed_expiry ON processed (expires_at);

-- The latest sequenceNumber seen per resource, for diagnostics.
CREATE TABLE IF NOT EXISTS sequences (
    resource_id TEXT PRIMARY KEY,
    sequence    INTEGER NOT NULL
);

-- Facts about the store itself, e.g. which worker started last (written at every start, which
-- also proves the store is writable before any message is taken).
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
