-- A note on a ledger key, written by the attempt that holds its claim before it acts: a capture's
-- or refund's baseline (what the payment showed taken before the call, and the amount asked
-- for). The Payment Intents API documents no idempotency key, so after a crash or a 500 a later
-- attempt tells from the note whether the earlier one's call was made. Kept when the claim is
-- taken over, given back (the row then stays, its lease released) or recorded. Rows written
-- before this migration have none; a payrules without this column ignores it.
ALTER TABLE ledger ADD COLUMN note TEXT;
