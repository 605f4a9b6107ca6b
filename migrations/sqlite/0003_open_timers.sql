-- The timers not yet done (pending or taken), for the queries the timer loop runs about once a
-- second: the next due time, the count of pending checks, the due ones to take. Timer rows are
-- never deleted, so an index of every row would make each of those cost every check ever
-- scheduled; this one holds only the open ones (a done timer leaves it).
CREATE INDEX IF NOT EXISTS timers_open ON timers (state, due, taken_until) WHERE state <> 'done';
