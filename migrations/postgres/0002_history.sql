-- History for `payrules explain`: which message's decision a ledger entry records (NULL for a
-- grace-period check's) and the action's reason (a cancel's); when a grace-period check was
-- scheduled and when it fired (ms since epoch). Rows written before this migration keep NULLs:
-- explain says it does not know.
ALTER TABLE ledger ADD COLUMN message_id TEXT;
ALTER TABLE ledger ADD COLUMN reason TEXT;
ALTER TABLE timers ADD COLUMN scheduled_at BIGINT;
ALTER TABLE timers ADD COLUMN fired_at BIGINT;
