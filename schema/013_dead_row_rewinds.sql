-- outbox-relay schema, version 13: a dead row that stops blocking its key leaves a rewind.
--
-- Under relay.dead_key_policy block, a key's rows after a dead one wait; the claim floor now rises
-- past them (relay/store/claim_floor.hpp), so that every claim does not read a blocked key's
-- growing backlog again. When the dead row is discarded, deleted, or given another key, the rows
-- it blocked are pending below the floor, and nothing about them changed: the rewind names the
-- dead row, whose id is below all of them, in the lane of its key. A requeue (dead to pending)
-- already leaves one (version 11).
CREATE FUNCTION outbox.note_dead_row_unblocked() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO outbox.claim_rewinds (id, key_hash)
  VALUES (OLD.id, hashtext(coalesce(OLD.message_key, '')));
  RETURN NULL;
END
$$;

CREATE TRIGGER messages_dead_row_unblocked AFTER UPDATE ON outbox.messages FOR EACH ROW
  WHEN (OLD.state = 'dead' AND NEW.state NOT IN ('dead', 'pending')
        OR OLD.state = 'dead' AND OLD.message_key IS DISTINCT FROM NEW.message_key)
  EXECUTE FUNCTION outbox.note_dead_row_unblocked();

CREATE TRIGGER messages_dead_row_deleted AFTER DELETE ON outbox.messages FOR EACH ROW
  WHEN (OLD.state = 'dead')
  EXECUTE FUNCTION outbox.note_dead_row_unblocked();
