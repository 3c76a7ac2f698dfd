-- outbox-relay schema, version 4: terminal rows by age. Serves "published in the last minute"
-- (outbox-relay status) and the retention purge without scanning history.
CREATE INDEX messages_finished_idx ON outbox.messages ((coalesce(published_at, created_at)))
  WHERE state IN ('published', 'rolled_back', 'discarded');

-- Gives up on a dead row: it becomes 'discarded' (terminal, never published) with the operator's
-- reason in front of the old one. Its key is no longer blocked. Returns false if it was not dead.
CREATE FUNCTION outbox.discard(id bigint, reason text) RETURNS boolean LANGUAGE sql AS $$
  UPDATE outbox.messages m
     SET state = 'discarded',
         last_error = 'discarded: ' || reason || coalesce(' (was: ' || m.last_error || ')', '')
   WHERE m.id = discard.id AND m.state = 'dead'
  RETURNING true
$$;
