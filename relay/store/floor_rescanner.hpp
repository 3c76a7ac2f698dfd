// The claim floor's rescan (claim_floor.hpp), off the claim path. Every
// relay.claim_rescan_interval_ms the claimer asks for the lowest pending id below its floor in its
// lanes; this looks for it on its own session and thread while claims go on, and hands the answer
// back once, for the floor to come down to.
//
// Why not on the claim's session: the look steps over every dead index entry below the floor, and
// a snapshot held anywhere in the cluster keeps them all. Done on the claim path, the rescan (the
// floor at 0 for a probe, then for claims until the next promotion) took 0.3-0.5 s after three
// minutes of a held snapshot at 1,600 rows/s, every 10 s: every row written meanwhile waited, the
// held-snapshot benchmark's latency tail.
//
// Paced: a look starts at most every relay.claim_rescan_interval_ms, and takes at most 5% of the
// time. Under a held snapshot its cost grows with every row published since (0.65 s after seven
// minutes at 1,600 rows/s, and on for as long as a pg_dump runs); unpaced, it would run back to
// back once a look outlasted the interval, a core spent stepping over dead entries. Paced, a row
// the rescan exists for is found later, by at most 20 times a look.
//
// A late answer is still right: lowering the floor only makes claims look further back, so an
// answer for lanes or a floor that have changed since is used as it is. A failed look is logged and
// paced like any other (its time counts: a look cancelled by statement_timeout did its reading), so
// the next starts at the first request the pacing allows. Thread-safe; one per claimer. Private to
// relay/store.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "relay/config/config.hpp"
#include "relay/core/periodic.hpp"

namespace outbox {

class LazySession;

class FloorRescanner {
 public:
  /// What to look for: `sql` takes these as $1 to $6 (array literals but the floor) and returns
  /// one row: the lowest pending id below the floor in the lanes, of the rows claims do not skip
  /// (claim_floor.hpp) and of the held routes' rows below where their holds began, or NULL.
  struct Request {
    std::string lanes;
    std::int64_t floor = 0;
    std::string quarantined_ids;
    std::string held_routes;
    std::string quarantined_keys;
    std::string hold_starts;  ///< ClaimFloor::hold_starts, in the order of held_routes
  };

  FloorRescanner(const PostgresConfig& postgres, std::string sql,
                 std::chrono::milliseconds interval);
  /// Waits for a running look to end.
  ~FloorRescanner();
  FloorRescanner(const FloorRescanner&) = delete;
  FloorRescanner& operator=(const FloorRescanner&) = delete;

  /// Starts a look, unless one is running, its answer is not yet taken, or the pacing says not
  /// yet; returns whether it started. Does not wait.
  bool request(Request request);

  /// What the last finished look found below its floor, once; nullopt when it found nothing or
  /// has not finished. Does not wait.
  std::optional<std::int64_t> take_found();

 private:
  void run() noexcept;

  // idle -> requested (request) -> looking (the thread) -> answered (the thread) -> idle
  // (take_found).
  enum class Stage { idle, requested, looking, answered };

  std::mutex mutex_;
  std::condition_variable wake_;
  Stage stage_ = Stage::idle;
  Request request_;
  std::optional<std::int64_t> found_;
  PacedSchedule schedule_;
  bool stopping_ = false;
  std::unique_ptr<LazySession> session_;
  std::thread thread_;  // last: started once everything it uses exists
};

}  // namespace outbox
