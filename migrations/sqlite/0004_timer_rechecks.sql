-- How many times a grace-period check found the payment's money in flight (a Charge or an
-- Authorization still Initial or Pending, no order) and scheduled itself again. The rechecks are
-- capped (then reported): the count is kept with the timer so that the cap holds across restarts
-- and replicas. Rows written before this migration start at 0.
ALTER TABLE timers ADD COLUMN rechecks INTEGER NOT NULL DEFAULT 0;
