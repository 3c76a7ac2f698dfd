-- outbox-relay schema, version 8: least privilege. The SQL API was run with the caller's rights,
-- so a writer needed SELECT and UPDATE on the whole table, and with them rewrote another service's
-- pending row, which the relay then published. Now:
--   outbox_writer  may call the SQL API and nothing else; it sees and changes only its own rows
--   outbox_relay   what `outbox-relay run` needs, and the operator's requeue and discard
--   outbox_reader  what `status`, `dead list`, `lanes show` and the gauges read
-- The API functions run as their owner (SECURITY DEFINER) with a fixed search_path, and each row
-- records the login that wrote it, so commit and rollback act only on the caller's own rows.
-- Creating the roles needs CREATEROLE; without it they are left to the DBA (README, "Roles and
-- grants") and only the grants to roles that exist are made.

-- text, not name: name is a fixed 64 bytes, and every row carries it.
ALTER TABLE outbox.messages ADD COLUMN written_by text NOT NULL DEFAULT session_user;

DO $$
DECLARE
  role_name text;
BEGIN
  FOREACH role_name IN ARRAY ARRAY['outbox_writer', 'outbox_relay', 'outbox_reader'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
      IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user
                   AND (rolsuper OR rolcreaterole)) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
      ELSE
        RAISE NOTICE 'outbox: role % does not exist and % cannot create it; see README',
          role_name, current_user;
      END IF;
    END IF;
  END LOOP;
END
$$;

-- Only the caller's own half messages: another writer's are as if they did not exist.
CREATE OR REPLACE FUNCTION outbox.resolve_half_messages(ids bigint[], decision outbox.row_state)
RETURNS integer LANGUAGE plpgsql AS $$
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

-- Run as the owner, with nothing on the search path a caller could plant a function in.
ALTER FUNCTION outbox.publish(text, text, bytea, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.publish(text, text, text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.publish(text, text, jsonb, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.prepare(text, text, bytea, jsonb, text, text, integer) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.prepare(text, text, text, jsonb, text, text, integer) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.prepare(text, text, jsonb, jsonb, text, text, integer) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.resolve_half_messages(bigint[], outbox.row_state) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.commit(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.rollback(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.commit(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.rollback(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.requeue(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.discard(bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Functions are executable by PUBLIC unless revoked; tables are not readable by PUBLIC.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA outbox FROM PUBLIC;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_writer') THEN
    GRANT USAGE ON SCHEMA outbox TO outbox_writer;
    GRANT EXECUTE ON FUNCTION
      outbox.publish(text, text, bytea, jsonb), outbox.publish(text, text, text, jsonb),
      outbox.publish(text, text, jsonb, jsonb),
      outbox.prepare(text, text, bytea, jsonb, text, text, integer),
      outbox.prepare(text, text, text, jsonb, text, text, integer),
      outbox.prepare(text, text, jsonb, jsonb, text, text, integer),
      outbox.commit(bigint), outbox.rollback(bigint),
      outbox.commit(text, text), outbox.rollback(text, text)
      TO outbox_writer;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
    GRANT USAGE ON SCHEMA outbox TO outbox_relay;
    GRANT SELECT, UPDATE, DELETE ON outbox.messages TO outbox_relay;
    GRANT SELECT, INSERT, UPDATE, DELETE ON outbox.relay_instances TO outbox_relay;
    -- UPDATE because the start-up check reads the lane count FOR SHARE.
    GRANT SELECT, INSERT, UPDATE ON outbox.relay_settings TO outbox_relay;
    GRANT EXECUTE ON FUNCTION outbox.requeue(bigint), outbox.discard(bigint, text) TO outbox_relay;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_reader') THEN
    GRANT USAGE ON SCHEMA outbox TO outbox_reader;
    GRANT SELECT ON outbox.messages, outbox.relay_settings, outbox.relay_instances TO outbox_reader;
  END IF;
END
$$;
