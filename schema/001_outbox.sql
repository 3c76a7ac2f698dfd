-- outbox-relay schema, version 1: the outbox table, its state enum, and the SQL API that
-- applications call inside their own transactions.

CREATE TYPE outbox.row_state AS ENUM ('pending', 'unknown', 'published', 'rolled_back', 'dead');

CREATE TABLE outbox.messages (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- Destination topic. Nullable on purpose: a row without one is parked as dead with a reason
  -- instead of being refused at insert (the writer's transaction must not fail over routing).
  topic           text,
  -- Debezium-style routing column (routing.topic_column: aggregate_type, with a topic_pattern).
  aggregate_type  text,
  message_key     text,
  payload         bytea,
  headers         jsonb NOT NULL DEFAULT '{}'::jsonb,
  state           outbox.row_state NOT NULL DEFAULT 'pending',
  attempts        integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz,
  last_error      text,
  created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  published_at    timestamptz,
  kafka_partition integer,
  kafka_offset    bigint
);

-- The relay's claim reads pending rows in id order. A partial index holds only the rows still to
-- publish, so the claim's cost does not grow with published rows kept for audit.
CREATE INDEX messages_pending_idx ON outbox.messages (id) WHERE state = 'pending';
-- Dead rows are few; this lets the claim check "an earlier row of this key is dead" cheaply
-- (relay.dead_key_policy: block).
CREATE INDEX messages_dead_key_idx ON outbox.messages (message_key, id) WHERE state = 'dead';
-- Half messages waiting for their writer or for check-back.
CREATE INDEX messages_unknown_idx ON outbox.messages (next_attempt_at, id) WHERE state = 'unknown';

-- NOTIFY is only a hint that wakes the relay early; polling still finds every row. A statement
-- trigger sends one notification per inserting statement, and PostgreSQL folds identical
-- notifications of one transaction into one. Its cost to writers: every committing transaction
-- that notified takes a cluster-wide lock on the notification queue at commit
-- (see README, "Wake-up and its cost").
CREATE FUNCTION outbox.notify_relay() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('outbox_relay', '');
  RETURN NULL;
END
$$;

CREATE TRIGGER messages_notify_relay
  AFTER INSERT ON outbox.messages
  FOR EACH STATEMENT EXECUTE FUNCTION outbox.notify_relay();

-- Turns the wake-up trigger on or off; `outbox-relay migrate` applies relay.notify from the config.
CREATE FUNCTION outbox.set_notify(enabled boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF enabled THEN
    ALTER TABLE outbox.messages ENABLE TRIGGER messages_notify_relay;
  ELSE
    ALTER TABLE outbox.messages DISABLE TRIGGER messages_notify_relay;
  END IF;
END
$$;

-- The application's API: call it inside the transaction that changes your business rows.
-- Returns the new row's id (it is also sent to Kafka in the outbox-id header).
CREATE FUNCTION outbox.publish(topic text, key text, payload bytea, headers jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE sql AS $$
  INSERT INTO outbox.messages (topic, message_key, payload, headers)
  VALUES (topic, key, payload, coalesce(headers, '{}'::jsonb))
  RETURNING id
$$;

CREATE FUNCTION outbox.publish(topic text, key text, payload text, headers jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE sql AS $$
  SELECT outbox.publish(topic, key, convert_to(payload, 'UTF8'), headers)
$$;

CREATE FUNCTION outbox.publish(topic text, key text, payload jsonb, headers jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE sql AS $$
  SELECT outbox.publish(topic, key, convert_to(payload::text, 'UTF8'), headers)
$$;
