-- outbox-relay schema, version 12: dead rows are found without reading the table.
--
-- Since version 5 the only index over dead rows hashes their key: it serves the claim's "an
-- earlier row of this key is dead" lookup and nothing else. Every other question about dead rows
-- (the lag gauges' count each refresh, the operator's list, requeue and discard in id order and
-- id ranges) read the whole table, history included: with 100,000 published rows kept, one
-- refresh of the gauges read every page of it. Dead rows are few, so this index is small and
-- costs nothing on the rows that never die.
CREATE INDEX messages_dead_idx ON outbox.messages (id) WHERE state = 'dead';
