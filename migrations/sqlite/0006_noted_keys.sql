-- The ledger keys that carry a note: refund_on_return reads an order's return refunds
-- (`refund:{order}:…`) and the amounts their notes record with a range scan of this index
-- (SQLite compares text bytewise, so the range of a prefix is exactly the keys starting with it).
-- Only noted keys (a few per returned line) are in it.
CREATE INDEX IF NOT EXISTS ledger_noted ON ledger (key) WHERE note IS NOT NULL;
