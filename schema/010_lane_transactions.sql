-- outbox-relay schema, version 10: exactly-once delivery (kafka.exactly_once). Which Kafka
-- transactional producer last published for each lane, and how far its transactions are recorded.
--
-- With exactly_once the relay publishes each batch in a Kafka transaction that also writes, to
-- partition <lane> of the marker topic, the outbox ids the transaction carries for that lane
-- (KIP-618's offsets-in-the-same-transaction, with PostgreSQL as the source). A transaction of
-- sequence number s is recorded (its rows marked published) before transaction s + 1 commits, and
-- committed_seq says so in the same statement as the marks. So, per lane, at most one committed
-- transaction is unrecorded: the last marker of the lane's partition, when its sequence number is
-- above committed_seq. The next owner of the lane ends ("fences") transactional_id with Kafka's
-- InitProducerId, reads that marker and marks its rows published before its first claim.
CREATE TABLE outbox.relay_lanes (
  lane             integer PRIMARY KEY CHECK (lane >= 0),
  -- NULL: released cleanly (nothing committed and unrecorded); the next owner need not fence.
  transactional_id text,
  committed_seq    bigint NOT NULL DEFAULT 0,
  updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
    GRANT SELECT, INSERT, UPDATE ON outbox.relay_lanes TO outbox_relay;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_reader') THEN
    GRANT SELECT ON outbox.relay_lanes TO outbox_reader;
  END IF;
END
$$;
