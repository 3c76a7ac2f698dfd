-- outbox-relay schema, version 9: audit retention counts from when a row finished. The purge aged
-- rows by coalesce(published_at, created_at), so a row dead for 8 days and discarded today was
-- purged within seconds, though retention.keep_finished_ms promises its audit trail that long.
ALTER TABLE outbox.messages ADD COLUMN finished_at timestamptz;
UPDATE outbox.messages SET finished_at = coalesce(published_at, created_at)
 WHERE state IN ('published', 'rolled_back', 'discarded');

DROP INDEX outbox.messages_finished_idx;
CREATE INDEX messages_finished_idx ON outbox.messages (finished_at)
  WHERE state IN ('published', 'rolled_back', 'discarded');

-- The relay and the SQL API set finished_at themselves on each transition to a finished state.
-- There is no BEFORE UPDATE trigger as a net: it would call a function for every row the relay
-- marks, the hottest statement there is. A row moved to a finished state by hand gets no
-- finished_at, and is not purged until it has one. A row inserted already finished is
-- history: this trigger dates it from when it was published, or created. Its WHEN clause is
-- checked without calling the function, so the writers' inserts of pending rows pay nothing.
CREATE FUNCTION outbox.stamp_inserted_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.finished_at := coalesce(NEW.published_at, NEW.created_at);
  RETURN NEW;
END
$$;

CREATE TRIGGER messages_finished_on_insert BEFORE INSERT ON outbox.messages FOR EACH ROW
  WHEN (NEW.state IN ('published', 'rolled_back', 'discarded') AND NEW.finished_at IS NULL)
  EXECUTE FUNCTION outbox.stamp_inserted_finished();

-- A writer's rollback finishes its half messages.
CREATE OR REPLACE FUNCTION outbox.resolve_half_messages(ids bigint[], decision outbox.row_state)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  message record;
  changed integer := 0;
BEGIN
  FOR message IN
    SELECT id, state, last_error FROM outbox.messages
     WHERE id = ANY(ids) AND written_by = session_user ORDER BY id FOR UPDATE
  LOOP
    IF message.state = 'unknown'
       OR (message.state = 'dead' AND message.last_error = 'check-back exhausted') THEN
      UPDATE outbox.messages
         SET state = decision, checking_until = NULL,
             finished_at = CASE WHEN decision = 'rolled_back' THEN clock_timestamp() END
       WHERE id = message.id;
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

-- Discarding finishes a row: stamped here, so its audit trail starts now.
CREATE OR REPLACE FUNCTION outbox.discard(id bigint, reason text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  UPDATE outbox.messages m
     SET state = 'discarded', finished_at = clock_timestamp(),
         last_error = 'discarded: ' || reason || coalesce(' (was: ' || m.last_error || ')', '')
   WHERE m.id = discard.id AND m.state = 'dead'
  RETURNING true
$$;
