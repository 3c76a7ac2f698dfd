-- outbox-relay schema, version 7: instance liveness that does not depend on TCP.
--
-- Lanes are held by session advisory locks, which live as long as the holder's session. A holder
-- that is frozen (SIGSTOP, a VM paused) or silently cut off keeps its session, so its locks, for as
-- long as the server's TCP stack does not give up on it: hours. Each instance therefore renews a
-- heartbeat row here every relay.lane_rebalance_interval_ms; an instance whose row expired
-- (relay.lease_timeout_ms without a renewal) is ended by the others with pg_terminate_backend, so
-- its locks fall and its lanes move. The holder stops producing before its row can expire
-- (self-fencing), so it never publishes for a lane after another instance could have taken it.
CREATE TABLE outbox.relay_instances (
  instance     text PRIMARY KEY,          -- random per process start, plus host and pid
  backend_pid  integer NOT NULL,          -- the instance's claiming session
  heartbeat_at timestamptz NOT NULL,
  expires_at   timestamptz NOT NULL
);
