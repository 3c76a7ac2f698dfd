// The only module that talks to PostgreSQL: connecting, wake-ups, lane leases, claiming pending
// rows and recording what Kafka said about them. Nothing outside relay/store includes pqxx.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "relay/config/config.hpp"
#include "relay/core/ids.hpp"
#include "relay/core/outbox_row.hpp"

namespace pqxx {
class transaction_base;
}

namespace outbox {

class FloorRescanner;

/// PostgreSQL could not be reached or dropped the connection, or a statement hit a transient
/// condition (serialization failure, admin shutdown, too many connections). The caller backs off
/// and retries; the store reconnects on its next use. Anything else the store throws is a bug or a
/// schema problem and is not worth retrying.
class StoreUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// How much one claim may read. Memory is bounded by bytes, not rows: a writer decides how big a
/// row is.
struct ClaimLimits {
  int rows = 1000;
  /// Payload and key bytes of the whole batch; the first row is always taken, whatever its size.
  std::int64_t bytes = 4 << 20;
  /// A row larger than this (the producer's message.max.bytes) is parked from its octet_length:
  /// its payload never leaves PostgreSQL.
  std::int64_t max_row_bytes = 1000000;
};

/// A row that a statement could not read or record. The row is parked dead with `reason` when
/// that works; when even parking fails it is `quarantined`: the relay excludes it (and its key)
/// from its claims until it restarts, so one row never stops the others.
struct RowProblem {
  OutboxId id;
  std::optional<std::string> key;  ///< when it could be read
  std::string reason;
  bool quarantined = false;
};

/// Another instance took this one for dead (its heartbeat expired) and removed its row; the lanes
/// it held may be another's now. The caller fences: drops what is in flight and reconnects.
class LeaseLost : public StoreUnavailable {
 public:
  using StoreUnavailable::StoreUnavailable;
};

/// The lane count stored in the database (outbox.relay_settings) is not relay.lanes. Not
/// retriable: two instances with different counts split keys differently, so a row would belong
/// to no instance or to two. The message names both counts and what to do.
class LaneCountMismatch : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A batch of pending rows read from the outbox, in id order.
struct ClaimedBatch {
  std::vector<OutboxRow> rows;
  bool reached_end = false;          ///< fewer rows than asked for: the backlog is drained for now
  std::vector<RowProblem> problems;  ///< rows this claim parked or quarantined instead
};

/// What the lane leases look like after a rebalance step.
struct LaneOwnership {
  std::vector<LaneId> owned;  ///< lanes this instance holds now, ascending
  int instances = 1;          ///< relay instances sharing this outbox (including this one)
  int fair_share = 0;         ///< how many lanes this instance aims to hold
  /// Instances whose heartbeat had expired and whose sessions this step ended, so their lanes
  /// could be taken.
  std::vector<std::string> ended_instances;
  /// Lanes taken in this step (not held before it): with exactly_once each is recovered (the
  /// exactly_once part of OutboxStore below) before anything of it is claimed.
  std::vector<LaneId> acquired;
  /// The steady-clock time until which this instance may act on its lanes: the heartbeat sent in
  /// this step, plus relay.lease_timeout_ms, less a margin. Others end it only after its row
  /// expires, which is later.
  std::chrono::steady_clock::time_point lease_valid_until;
};

/// The claiming session of one relay loop: membership, lane leases, LISTEN, claims. Not
/// thread-safe. Owns its connection: leases (session advisory locks) and LISTEN live exactly as
/// long as the connection; losing the connection loses both, which is what lets another instance
/// take the lanes over. Outcomes are recorded on another session (outcome_store.hpp).
class OutboxStore {
 public:
  OutboxStore(const PostgresConfig& postgres, const RoutingConfig& routing,
              const RelayConfig& relay);
  ~OutboxStore();
  OutboxStore(const OutboxStore&) = delete;
  OutboxStore& operator=(const OutboxStore&) = delete;

  /// Opens the session if it is not open: connects, prepares statements, joins the instance
  /// membership and LISTENs when relay.notify is on. Throws StoreUnavailable.
  void ensure_connected();
  /// Drops the session (and with it every lease). Safe to call at any time.
  void disconnect() noexcept;
  bool connected() const;

  /// Waits up to `timeout` for a NOTIFY from the insert trigger, or until `interrupt_fd` (when not
  /// -1; see StopEvent) is readable. Returns true when a NOTIFY arrived. Without LISTEN
  /// (relay.notify off) it waits for the interrupt or the timeout only. Throws StoreUnavailable.
  bool wait_for_wakeup(std::chrono::milliseconds timeout, int interrupt_fd = -1);

  /// Renews this instance's heartbeat, ends the sessions of instances whose heartbeat expired
  /// (their locks fall; needs the right to pg_terminate_backend them), then takes free lanes up to
  /// this instance's fair share; when it holds more than its share and `may_release` is set,
  /// releases the highest ones. Throws StoreUnavailable; throws LeaseLost when this instance's own
  /// heartbeat row was removed by another (it was taken for dead: its lanes may be gone).
  LaneOwnership rebalance_lanes(bool may_release);

  /// The id from which claims look for pending rows (claim_floor.hpp); 0 without a session.
  std::int64_t claim_floor() const;

  /// This process's instance name in outbox.relay_instances.
  const std::string& instance() const { return instance_; }

  /// Reads pending rows of the owned lanes in id order, within `limits`, skipping the ids in
  /// `in_flight` (already handed to Kafka, not yet recorded), rows whose routing value is in
  /// `held_routes` (topics held back after a failure), quarantined rows and their keys, and, under
  /// dead_key_policy block, the rows whose key has an earlier dead row. Routing and header decoding
  /// happen here; a row that cannot be routed comes back with `defect` set. When the statement
  /// fails on a row's data, the rows are read one by one and the unreadable ones parked (see
  /// RowProblem). Throws StoreUnavailable.
  ClaimedBatch claim_batch(std::span<const OutboxId> in_flight,
                           std::span<const std::string> held_routes, const ClaimLimits& limits);

  /// Writes `reason` into the rows' last_error (state and attempts unchanged), so `status` can say
  /// why a topic's oldest row waits while Kafka holds it. Throws StoreUnavailable.
  void note_waiting(std::span<const OutboxId> ids, const std::string& reason);

  /// Excludes a row (and, when given, its key) from this session's claims until the process ends:
  /// the last resort for a row that could not even be parked.
  void quarantine(const RowProblem& problem);

  // --- exactly_once (schema/010_lane_transactions.sql) -------------------------------------
  /// "<system identifier>.<database name>": names this database in transactional ids. Throws
  /// StoreUnavailable, or std::runtime_error when the role may not read pg_control_system().
  std::string database_identity();
  /// Which producer last published for `lane` and how far it is recorded; nullopt id: released
  /// cleanly (or never used).
  struct LaneTransaction {
    std::optional<std::string> transactional_id;
    std::int64_t committed_seq = 0;
  };
  LaneTransaction lane_transaction(LaneId lane);
  /// Makes `transactional_id` the lane's publisher, all of whose transactions up to
  /// `committed_seq` are recorded (those that did not carry the lane count as recorded). Only
  /// while this session holds the lane. Throws StoreUnavailable.
  void take_lane(LaneId lane, const std::string& transactional_id, std::int64_t committed_seq);
  /// Marks `ids` published (deleted with delete_on_publish) where they are still pending: rows a
  /// fenced producer committed to Kafka and did not record. Returns how many changed.
  std::size_t mark_recovered(std::span<const OutboxId> ids, bool delete_on_publish,
                             const std::string& note);
  /// A clean stop with every transaction recorded: the lanes `transactional_id` published for
  /// name no producer, so their next owner need not fence it.
  void release_lanes_of(const std::string& transactional_id);
  /// Set while exactly_once runs: lanes released cleanly by rebalance_lanes lose this id (nothing
  /// of theirs is committed and unrecorded), so their next owner need not fence it.
  void set_lane_publisher(std::optional<std::string> transactional_id) {
    lane_publisher_ = std::move(transactional_id);
  }

 private:
  struct Session;
  template <typename Work>
  auto run(const std::string& what, Work&& work);
  PostgresConfig postgres_;
  RoutingConfig routing_;
  RelayConfig relay_;
  std::string instance_;
  std::unique_ptr<Session> session_;
  std::unique_ptr<FloorRescanner> rescanner_;  ///< once a session has the floor on
  std::optional<std::string> lane_publisher_;
  std::vector<std::string> terminate_refused_;  ///< instances we could not end (logged once)
  std::vector<std::int64_t> quarantined_ids_;
  std::vector<std::string> quarantined_keys_;
  std::vector<RowProblem> isolate_claim_failure(const std::string& excluded_ids,
                                                const std::string& held_routes,
                                                const ClaimLimits& limits, std::int64_t floor,
                                                std::vector<OutboxRow>& rows);
  /// Runs the claim floor's probe, with the rescan's answer if one came (and asks for the next
  /// rescan when it is due), and moves the floor; both skip the rows claims skip, among them
  /// those of `held` (the held routes; `held_param` is their text[] literal).
  void probe_floor(const std::vector<std::string>& held, const std::string& held_param);
  RowProblem park_as_dead(OutboxId id, std::string reason);
  void end_expired_instances(pqxx::transaction_base& tx, LaneOwnership& ownership);
};

/// Applies the migrations in schema/ that the database lacks, each in its own transaction under an
/// advisory lock, so two processes migrating at once do not collide; then sets the NOTIFY trigger
/// to `notify`. Returns the versions applied now (empty when up to date). Throws StoreUnavailable
/// or std::runtime_error with the failing migration's name.
/// Also stores `lanes` as the outbox's lane count on first use; throws LaneCountMismatch when
/// another count is stored.
std::vector<int> apply_migrations(const PostgresConfig& postgres, bool notify, int lanes);

/// The outbox's stored lane count; nullopt before the first `migrate` or `run`.
std::optional<int> stored_lane_count(const PostgresConfig& postgres);

/// Stores a new lane count. Refuses (std::runtime_error saying how many) while any relay instance
/// is connected to this outbox: instances read the count when they connect, and one running with
/// the old count beside one with the new would split keys two ways. With every instance stopped
/// nothing is in flight, and pending rows simply hash to the new lanes. Returns the old count.
int change_lane_count(const PostgresConfig& postgres, int lanes);

/// The connection string with the relay's session settings (connect_timeout, application_name,
/// keepalives, tcp_user_timeout, and server-side settings through options) added unless the user
/// set them. Throws ConfigError when libpq cannot parse postgres.url.
std::string session_connection_string(const PostgresConfig& postgres);

/// PostgreSQL's array literal for a list of values, e.g. {1,2,3} or {"a b",NULL}.
std::string format_int_array(std::span<const std::int64_t> values);
std::string format_text_array(std::span<const std::string> values);

}  // namespace outbox
