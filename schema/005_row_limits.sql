-- outbox-relay schema, version 5: no single row can stop the relay or the sweeper.
--
-- 1. Dead rows are looked up by key through a hash index instead of a btree. A btree entry has a
--    size limit (about 2.7 kB); parking a row with a longer key as dead failed inside the relay's
--    recording statement, every time, at every restart. A hash index stores only the key's hash,
--    so a key of any length can be parked; the claim's "an earlier row of this key is dead" test is
--    an equality lookup, which is all a hash index serves.
DROP INDEX outbox.messages_dead_key_idx;
CREATE INDEX messages_dead_key_idx ON outbox.messages USING hash (message_key)
  WHERE state = 'dead';

-- 2. created_at must be a real time: 'infinity' cannot be turned into milliseconds, an age or a
--    lag. Rows that already carry one get the migration's time (they are otherwise good rows and
--    are published as usual); new ones are refused at insert with this constraint's name.
UPDATE outbox.messages SET created_at = clock_timestamp() WHERE NOT isfinite(created_at);
ALTER TABLE outbox.messages
  ADD CONSTRAINT messages_created_at_finite CHECK (isfinite(created_at));

-- 3. The check-back lookup index is a btree over (producer_group, transaction_id); past its entry
--    limit an insert failed with an index error that names no column. A clear limit instead,
--    checked at insert (NOT VALID: rows inserted before could not have exceeded the index limit).
ALTER TABLE outbox.messages
  ADD CONSTRAINT messages_producer_group_length CHECK (octet_length(producer_group) <= 1024)
  NOT VALID,
  ADD CONSTRAINT messages_transaction_id_length CHECK (octet_length(transaction_id) <= 1024)
  NOT VALID;
