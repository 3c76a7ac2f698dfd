-- outbox-relay schema, version 13: rows the claim floor rose past leave a rewind when they become
-- claimable by an UPDATE that version 11's trigger does not note.
--
-- The floor (relay/store/claim_floor.hpp) rises past the rows claims skip: a held topic's, and
-- under relay.dead_key_policy block the rows of a key after a dead one, so that every claim does
-- not read such a backlog again. Two changes make them claimable below the floor with nothing
-- about a pending row's state or key changed:
-- * A dead row that is discarded, deleted, or given another key stops blocking its key's later
--   rows. The rewind names the dead row, whose id is below all of them, in the lane of its key. A
--   dead row without a key blocks nothing, and leaves none. A requeue (dead to pending) already
--   leaves one (version 11).
-- * A pending row moved to another topic (an operator re-routing a missing topic's backlog) may
--   leave a held topic for one that flows. Only the `topic` column is watched: with
--   routing.topic_column naming another column, such a row is found by the relay's rescan below
--   the floor (relay.claim_rescan_interval_ms) or the old topic's next retry.

-- Version 11's function notes NEW; these notes name the old row (its id, its key's lane), so it
-- takes an argument: 'old' for them.
CREATE OR REPLACE FUNCTION outbox.note_claim_rewind() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  noted_id bigint;
  noted_key text;
BEGIN
  -- NEW is not there for DELETE: only read the row named.
  IF TG_NARGS > 0 AND TG_ARGV[0] = 'old' THEN
    noted_id := OLD.id;
    noted_key := OLD.message_key;
  ELSE
    noted_id := NEW.id;
    noted_key := NEW.message_key;
  END IF;
  INSERT INTO outbox.claim_rewinds (id, key_hash)
  VALUES (noted_id, hashtext(coalesce(noted_key, '')));
  RETURN NULL;
END
$$;

CREATE TRIGGER messages_dead_row_unblocked AFTER UPDATE ON outbox.messages FOR EACH ROW
  WHEN (OLD.state = 'dead' AND OLD.message_key IS NOT NULL
        AND (NEW.state NOT IN ('dead', 'pending')
             OR OLD.message_key IS DISTINCT FROM NEW.message_key))
  EXECUTE FUNCTION outbox.note_claim_rewind('old');

CREATE TRIGGER messages_dead_row_deleted AFTER DELETE ON outbox.messages FOR EACH ROW
  WHEN (OLD.state = 'dead' AND OLD.message_key IS NOT NULL)
  EXECUTE FUNCTION outbox.note_claim_rewind('old');

-- UPDATE OF topic: the relay's marks do not name the column, so the trigger is not even looked at
-- for them. Version 11's function notes the row itself, in its (unchanged) key's lane.
CREATE TRIGGER messages_topic_changed AFTER UPDATE OF topic ON outbox.messages FOR EACH ROW
  WHEN (OLD.state = 'pending' AND NEW.state = 'pending' AND OLD.topic IS DISTINCT FROM NEW.topic)
  EXECUTE FUNCTION outbox.note_claim_rewind();
