-- outbox-relay schema, version 2: half messages (RocketMQ-style transactional messages).
-- A writer that cannot decide at insert time calls outbox.prepare(); the row waits in state
-- 'unknown' until the writer calls outbox.commit() or outbox.rollback(), or until the relay's
-- sweeper asks the writer's status-check endpoint what became of the transaction.

ALTER TABLE outbox.messages
  ADD COLUMN producer_group    text,
  ADD COLUMN transaction_id    text,
  -- Check-back accounting: requests actually sent, the last answer (or failure), and a lease so
  -- two relay instances never check one row at the same time. next_attempt_at is the next check.
  ADD COLUMN check_count       integer NOT NULL DEFAULT 0,
  ADD COLUMN last_check_answer text,
  ADD COLUMN checking_until    timestamptz;

CREATE INDEX messages_transaction_idx ON outbox.messages (producer_group, transaction_id)
  WHERE transaction_id IS NOT NULL;

-- Inserts a half message: never published while 'unknown'. check_delay_seconds overrides the
-- relay's checkback.check_delay_ms for this row (RocketMQ's CHECK_IMMUNITY_TIME_IN_SECONDS).
CREATE FUNCTION outbox.prepare(topic text, key text, payload bytea, headers jsonb,
                               producer_group text, transaction_id text,
                               check_delay_seconds integer DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  new_id bigint;
BEGIN
  IF producer_group IS NULL OR transaction_id IS NULL THEN
    RAISE EXCEPTION 'outbox.prepare: producer_group and transaction_id are required'
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  INSERT INTO outbox.messages (topic, message_key, payload, headers, state, producer_group,
                               transaction_id, next_attempt_at)
  VALUES (topic, key, payload, coalesce(headers, '{}'::jsonb), 'unknown', producer_group,
          transaction_id,
          clock_timestamp() + make_interval(secs => check_delay_seconds))
  RETURNING id INTO new_id;
  RETURN new_id;
END
$$;

CREATE FUNCTION outbox.prepare(topic text, key text, payload text, headers jsonb,
                               producer_group text, transaction_id text,
                               check_delay_seconds integer DEFAULT NULL)
RETURNS bigint LANGUAGE sql AS $$
  SELECT outbox.prepare(topic, key, convert_to(payload, 'UTF8'), headers, producer_group,
                        transaction_id, check_delay_seconds)
$$;

CREATE FUNCTION outbox.prepare(topic text, key text, payload jsonb, headers jsonb,
                               producer_group text, transaction_id text,
                               check_delay_seconds integer DEFAULT NULL)
RETURNS bigint LANGUAGE sql AS $$
  SELECT outbox.prepare(topic, key, convert_to(payload::text, 'UTF8'), headers, producer_group,
                        transaction_id, check_delay_seconds)
$$;

-- Resolves half messages. Idempotent: committing a committed row, or rolling back a rolled-back
-- one, does nothing. Illegal transitions raise SQLSTATE 55000 (object_not_in_prerequisite_state)
-- naming the row: a rolled-back row is never committed, a committed or published one never rolled
-- back. A row parked dead because check-back was exhausted still takes the writer's decision.
-- Rows are locked first, so a decision and a sweeper's verdict never interleave: whichever comes
-- first wins, and the sweeper only ever changes rows still 'unknown'.
CREATE FUNCTION outbox.resolve_half_messages(ids bigint[], decision outbox.row_state)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  message record;
  changed integer := 0;
BEGIN
  FOR message IN
    SELECT id, state, last_error FROM outbox.messages WHERE id = ANY(ids) ORDER BY id FOR UPDATE
  LOOP
    IF message.state = 'unknown'
       OR (message.state = 'dead' AND message.last_error = 'check-back exhausted') THEN
      UPDATE outbox.messages SET state = decision, checking_until = NULL WHERE id = message.id;
      changed := changed + 1;
    ELSIF decision = 'pending' AND message.state IN ('pending', 'published') THEN
      NULL;  -- already committed
    ELSIF decision = 'rolled_back' AND message.state = 'rolled_back' THEN
      NULL;  -- already rolled back
    ELSE
      RAISE EXCEPTION 'outbox: cannot % message % in state %',
        CASE WHEN decision = 'pending' THEN 'commit' ELSE 'roll back' END, message.id, message.state
        USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
  END LOOP;
  RETURN changed;
END
$$;

CREATE FUNCTION outbox.commit(id bigint) RETURNS integer LANGUAGE sql AS $$
  SELECT outbox.resolve_half_messages(ARRAY[id], 'pending')
$$;

CREATE FUNCTION outbox.rollback(id bigint) RETURNS integer LANGUAGE sql AS $$
  SELECT outbox.resolve_half_messages(ARRAY[id], 'rolled_back')
$$;

CREATE FUNCTION outbox.commit(producer_group text, transaction_id text) RETURNS integer
LANGUAGE sql AS $$
  SELECT outbox.resolve_half_messages(array_agg(m.id), 'pending')
    FROM outbox.messages m
   WHERE m.producer_group = $1 AND m.transaction_id = $2
$$;

CREATE FUNCTION outbox.rollback(producer_group text, transaction_id text) RETURNS integer
LANGUAGE sql AS $$
  SELECT outbox.resolve_half_messages(array_agg(m.id), 'rolled_back')
    FROM outbox.messages m
   WHERE m.producer_group = $1 AND m.transaction_id = $2
$$;

-- Puts a dead row back: an exhausted check-back returns to 'unknown' with its count reset (the
-- sweeper asks again at once); any other dead row returns to 'pending'. Returns the new state.
CREATE FUNCTION outbox.requeue(id bigint) RETURNS outbox.row_state LANGUAGE plpgsql AS $$
DECLARE
  new_state outbox.row_state;
BEGIN
  UPDATE outbox.messages m
     SET state = CASE WHEN m.last_error = 'check-back exhausted' THEN 'unknown'::outbox.row_state
                      ELSE 'pending'::outbox.row_state END,
         check_count = CASE WHEN m.last_error = 'check-back exhausted' THEN 0 ELSE m.check_count END,
         next_attempt_at = CASE WHEN m.last_error = 'check-back exhausted' THEN clock_timestamp()
                                ELSE m.next_attempt_at END,
         last_error = 'requeued after: ' || coalesce(m.last_error, '')
   WHERE m.id = requeue.id AND m.state = 'dead'
  RETURNING m.state INTO new_state;
  IF new_state IS NULL THEN
    RAISE EXCEPTION 'outbox.requeue: message % is not dead', id
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  RETURN new_state;
END
$$;
