-- outbox-relay schema, version 11: the claim floor (relay/store/claim_floor.hpp). The relay's claim
-- starts its scan of messages_pending_idx at an id below which nothing in its lanes is pending,
-- so the dead entries that a held snapshot keeps from VACUUM are not stepped over by every claim.
-- A row can become pending below that floor only by an UPDATE; this trigger notes each such row,
-- and the relay that owns its lane takes the note (deleting it) and looks from there again.
CREATE TABLE outbox.claim_rewinds (
  id       bigint NOT NULL,
  -- hashtext of the row's key, as the claim's lane filter computes it ('' for no key).
  key_hash integer NOT NULL
);

-- SECURITY DEFINER: whoever updates the row (a writer's commit, the sweeper, an operator's
-- requeue, plain SQL) need not be allowed to write the notes.
CREATE FUNCTION outbox.note_claim_rewind() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO outbox.claim_rewinds (id, key_hash)
  VALUES (NEW.id, hashtext(coalesce(NEW.message_key, '')));
  RETURN NULL;
END
$$;

-- The WHEN clause is checked without calling the function: the relay's marks (pending to
-- published) fail its first test and cost nothing more. A pending row whose key changed may have
-- moved to another instance's lanes, so it is noted too.
CREATE TRIGGER messages_claim_rewind AFTER UPDATE ON outbox.messages FOR EACH ROW
  WHEN (NEW.state = 'pending' AND (OLD.state <> 'pending'
                                   OR OLD.message_key IS DISTINCT FROM NEW.message_key))
  EXECUTE FUNCTION outbox.note_claim_rewind();

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
    GRANT SELECT, DELETE ON outbox.claim_rewinds TO outbox_relay;
    -- The floor's probe reads the id sequence's last value.
    EXECUTE format('GRANT SELECT ON SEQUENCE %s TO outbox_relay',
                   pg_get_serial_sequence('outbox.messages', 'id'));
  END IF;
END
$$;
