// The claim floor: an id below which the claim need not look, because no row there is pending in
// this instance's lanes or ever will be, except by an UPDATE (which leaves a rewind) or by a
// path the periodic rescan covers.
//
// Why: the claim reads messages_pending_idx in id order. Every row the relay marks leaves a dead
// entry in front of the live ones until VACUUM removes it, and a snapshot held anywhere in the
// cluster (pg_dump, an analytics query, a standby with hot_standby_feedback) keeps them all; each
// claim then stepped over every row published since the snapshot was taken. Starting the index
// scan at the floor steps over none of them.
//
// The rule that makes skipping safe. Ids come from a sequence with CACHE 1 (checked: with a larger
// cache a session hands out ids it took long before, and the floor stays off), so an id is taken
// before its transaction commits, and a row may become visible well after rows with higher ids.
// A probe reads, in one snapshot S, the lowest pending id m >= floor of the owned lanes, and S's
// xmin and xmax; it also reads the sequence's last value, used by the *next* probe (it was then
// taken before that probe's snapshot). Its candidate C = min(m, next id of the previous probe,
// rewound ids). A row below C invisible to S belonged to a transaction in progress at S, all of
// whose xids are below S's xmax. So once a later probe P sees xmin >= S.xmax, every such
// transaction has ended and P, which scanned from the current floor, saw what they committed:
// the floor becomes min(C, P's m). A long writing transaction holds the floor (and only it) back.
//
// What the rule cannot see, and what covers it: a row that becomes pending by UPDATE (a half
// message committed, a dead row requeued, a key changed) leaves a rewind row (schema/011), and
// the probe lowers the floor to it; a claim whose snapshot sees a rewind its probe did not (it
// committed between the two) starts from it as well (store.cpp, claim_filter). A row whose id was
// taken before its transaction had an xid (a BEFORE trigger between the default and the write) or
// whose id was written by hand (OVERRIDING SYSTEM VALUE) is found by the rescan
// (floor_rescanner.hpp), which looks below the floor every relay.claim_rescan_interval_ms, on its
// own session; what it finds comes in as a rewind does. Lowering the floor is always safe: it only
// makes claims look further back.
//
// Rows the claim skips (a held topic's, a quarantined row's or key's, a key blocked by an earlier
// dead row) are skipped by the probe and the rescan too, so the floor rises past them: otherwise
// one missing topic's backlog, below every other row, was read again by every claim of every
// topic (0.15 s a claim at 300,000 held rows, growing with the backlog). A hold's end brings the
// floor back down to where it stood when the hold began, and a retry that fails puts it back up
// at once (hold_routes); a quarantine lasts as long as the relay process; a dead row that changes
// state leaves a rewind (schema/013), which lowers the floor to it, below the rows it blocked, and
// so does a pending row moved to another topic. A rewound row may be a held route's: the floor
// rises past it again, so the route's release must come down to it (lower_to).
//
// Not thread-safe; one per claiming session. Pure logic: tests/unit/claim_floor_test.cpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace outbox {

class ClaimFloor {
 public:
  /// What one probe read, all in one snapshot except `last_id` (read in the same statement, used
  /// by the next probe).
  struct Probe {
    /// Lowest pending id >= floor() in the owned lanes, of the rows claims do not skip.
    std::optional<std::int64_t> lowest_pending;
    /// Lowest id of the rewinds this probe took, and of a row the rescan found below the floor.
    std::optional<std::int64_t> lowest_rewound;
    std::uint64_t snapshot_xmin = 0;
    std::uint64_t snapshot_xmax = 0;
    std::optional<std::int64_t> last_id;  ///< the sequence's last value; none before its first use
  };

  /// Claims look at ids >= this.
  std::int64_t floor() const { return floor_; }

  void observe(const Probe& probe) {
    // Promote the newest candidate whose transactions have all ended: those with xmax <= xmin.
    std::optional<std::int64_t> promoted;
    while (!candidates_.empty() && candidates_.front().xmax <= probe.snapshot_xmin) {
      promoted = candidates_.front().id;
      candidates_.pop_front();
    }
    if (promoted) {
      floor_ = std::max(floor_, std::min(*promoted, probe.lowest_pending.value_or(*promoted)));
    }
    // A rewound row is pending below the floor now: look from it again. The queued candidates did
    // not see it either.
    if (probe.lowest_rewound) lower_to(*probe.lowest_rewound);
    std::optional<std::int64_t> candidate = probe.lowest_pending;
    if (previous_last_id_) {
      const std::int64_t not_yet_taken = *previous_last_id_ + 1;
      candidate = candidate ? std::min(*candidate, not_yet_taken) : not_yet_taken;
    }
    if (candidate && probe.lowest_rewound) candidate = std::min(*candidate, *probe.lowest_rewound);
    previous_last_id_ = probe.last_id;
    if (!candidate || *candidate <= floor_) return;
    // Bounded: a long writing transaction stops promotion; the newest candidate replaces the last
    // queued one, which only makes the floor wait for a later xmax.
    if (candidates_.size() >= kMaxCandidates) candidates_.pop_back();
    candidates_.push_back(Candidate{*candidate, probe.snapshot_xmax});
  }

  /// The routes (topics) whose rows claims skip now. A route gone from the set brings the floor
  /// back down to where it stood when that route was first held; a route new to it may have rows
  /// from the current floor on, which the floor may now rise past.
  ///
  /// A retry makes that round trip: the hold ends, the claims take the route's oldest rows, they
  /// fail, the route is held again. The floor then goes back to where it stood when the hold
  /// ended, or only as far as anything else brought it down to meanwhile (a rewind, a row the
  /// rescan found, another route's release; a reset forgets it): below that, only this route's
  /// rows can be pending, since every id below it was taken by a transaction that had ended by
  /// then. Without this every retry of a topic with a backlog made the next claims and probes
  /// read the whole backlog again (0.27 s each at 300,000 rows) until the floor had risen past it
  /// once more.
  void hold_routes(const std::vector<std::string>& held) {
    for (auto hold = held_from_.begin(); hold != held_from_.end();) {
      if (std::find(held.begin(), held.end(), hold->first) != held.end()) {
        ++hold;
        continue;
      }
      const std::int64_t floor_at_release = floor_;
      lower_to(hold->second);  // also lowers what the other released routes may go back up to
      released_from_[hold->first] = floor_at_release;
      hold = held_from_.erase(hold);
    }
    for (const std::string& route : held) {
      if (!held_from_.try_emplace(route, floor_).second) continue;
      if (const auto released = released_from_.find(route); released != released_from_.end()) {
        floor_ = std::max(floor_, released->second);
        released_from_.erase(released);
      }
    }
  }

  /// Where each of `held`'s rows may start (the floor for a route not yet held). A held route's
  /// row below its start (an id written by hand, or taken long before its transaction wrote) is
  /// one only the rescan can find, and should, before the release comes back down to the start;
  /// a look found after the release comes later than the key's rows claimed since.
  std::vector<std::int64_t> hold_starts(const std::vector<std::string>& held) const {
    std::vector<std::int64_t> starts;
    for (const std::string& route : held) {
      const auto hold = held_from_.find(route);
      starts.push_back(hold == held_from_.end() ? floor_ : hold->second);
    }
    return starts;
  }

  /// Forgets everything: a new session, whose last probe may have seen less, or lanes taken
  /// whose rows may lie anywhere; a held route's rows may then start anywhere too.
  void reset() {
    floor_ = 0;
    candidates_.clear();
    previous_last_id_.reset();
    for (auto& hold : held_from_) hold.second = 0;
    released_from_.clear();
  }

 private:
  struct Candidate {
    std::int64_t id;
    std::uint64_t xmax;
  };
  /// A row may be pending from `id` on: the floor, and what it may go back to, come down to it.
  /// So do the held routes' starts: the row may be a held route's (a rewound or rescanned row is
  /// of any route), and the floor rises past it again until that route's release, which must
  /// come back down to it.
  void lower_to(std::int64_t id) {
    floor_ = std::min(floor_, id);
    for (Candidate& candidate : candidates_) candidate.id = std::min(candidate.id, id);
    for (auto& hold : held_from_) hold.second = std::min(hold.second, id);
    // A re-held route's floor may go back up only as far as this row: it may be any route's.
    for (auto& released : released_from_) released.second = std::min(released.second, id);
  }

  static constexpr std::size_t kMaxCandidates = 64;
  std::int64_t floor_ = 0;
  std::deque<Candidate> candidates_;
  std::optional<std::int64_t> previous_last_id_;
  std::map<std::string, std::int64_t> held_from_;  // route -> the floor when its hold began
  // route -> the floor when its hold ended, or lower, to what has brought the floor down since
  std::map<std::string, std::int64_t> released_from_;
};

}  // namespace outbox
