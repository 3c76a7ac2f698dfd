-- outbox-relay schema, version 3: a terminal 'discarded' state for dead rows an operator gives up
-- on (`outbox-relay dead discard`); the row and its reason stay for audit until retention.
-- (A new enum value cannot be used in the transaction that adds it; version 4 uses it.)
ALTER TYPE outbox.row_state ADD VALUE IF NOT EXISTS 'discarded';
