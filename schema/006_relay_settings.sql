-- outbox-relay schema, version 6: what every relay instance of this outbox must agree on lives in
-- the database, not in each instance's file. Two instances with different relay.lanes hash keys to
-- different lanes: some rows belonged to no one and were never published, others to two instances
-- and were published twice. `migrate` stores the configured count on first use; `run` refuses a
-- configuration with another count; `outbox-relay lanes set N` changes it while no relay runs.
CREATE TABLE outbox.relay_settings (
  singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  lanes      integer NOT NULL CHECK (lanes BETWEEN 1 AND 1024 AND (lanes & (lanes - 1)) = 0),
  changed_at timestamptz NOT NULL DEFAULT now()
);
