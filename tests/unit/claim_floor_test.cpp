// Specification of the claim floor (relay/store/claim_floor.hpp): it moves up only once every
// transaction that could still commit a row below it has ended, and then no higher than the
// lowest pending row a probe found after they ended; a rewind (or a row the rescan found
// below it) brings it down at once; with nothing pending it stops at the sequence value read one
// probe earlier. Snapshots are written as (xmin, xmax) pairs, as pg_current_snapshot() gives them.
#include <doctest/doctest.h>

#include "relay/store/claim_floor.hpp"

using namespace outbox;

namespace {

ClaimFloor::Probe probe(std::optional<std::int64_t> lowest_pending, std::uint64_t xmin,
                        std::uint64_t xmax, std::optional<std::int64_t> last_id,
                        std::optional<std::int64_t> rewound = std::nullopt) {
  return ClaimFloor::Probe{lowest_pending, rewound, xmin, xmax, last_id};
}

/// Probes until the floor has risen to `lowest`: three probes that each see every transaction
/// ended and `lowest` as the lowest pending row (the first's candidate is capped by the sequence
/// value one probe earlier). Transaction ids count on from `xid`.
void rise_to(ClaimFloor& floor, std::int64_t lowest, std::uint64_t xid, std::int64_t last_id) {
  for (std::uint64_t i = 0; i < 3; ++i) floor.observe(probe(lowest, xid + i, xid + i, last_id));
}

}  // namespace

TEST_CASE("the floor waits for every transaction in progress at the candidate's snapshot") {
  ClaimFloor floor;
  CHECK(floor.floor() == 0);
  // Row 100 is the lowest pending; transaction 50 was running (it may hold an id below 100).
  floor.observe(probe(100, 50, 60, 120));
  CHECK(floor.floor() == 0);
  // 50 still runs: xmin is 50, below the candidate's xmax 60.
  floor.observe(probe(100, 50, 70, 130));
  CHECK(floor.floor() == 0);
  // Everything below 60 has ended, and row 100 is still the lowest pending.
  floor.observe(probe(100, 65, 70, 130));
  CHECK(floor.floor() == 100);
}

TEST_CASE("a row committed late below the candidate keeps the floor below it") {
  ClaimFloor floor;
  floor.observe(probe(100, 50, 60, 120));
  // Transaction 50 committed row 42: the probe after it ended finds 42 pending (it scanned from
  // the old floor, 0).
  floor.observe(probe(42, 61, 70, 130));
  CHECK(floor.floor() == 42);
}

TEST_CASE("with nothing pending the floor stops at the sequence value read one probe earlier") {
  ClaimFloor floor;
  // No previous sequence value: nothing is known to be taken yet.
  floor.observe(probe(std::nullopt, 10, 10, 500));
  floor.observe(probe(std::nullopt, 20, 20, 900));
  // The first probe's candidate had no bound; the second's is 501 (500 was read before its
  // snapshot, 900 after: an id up to 900 may belong to a transaction that had no xid yet).
  floor.observe(probe(std::nullopt, 30, 30, 950));
  CHECK(floor.floor() == 501);
  floor.observe(probe(std::nullopt, 40, 40, 950));
  CHECK(floor.floor() == 901);
}

TEST_CASE("the sequence bound caps the candidate even when rows are pending above it") {
  ClaimFloor floor;
  floor.observe(probe(std::nullopt, 10, 10, 200));
  floor.observe(probe(700, 20, 20, 800));  // candidate min(700, 201)
  floor.observe(probe(700, 30, 30, 800));
  CHECK(floor.floor() == 201);
}

TEST_CASE("a rewind brings the floor and every queued candidate down to the rewound row") {
  ClaimFloor floor;
  floor.observe(probe(100, 10, 10, 120));
  floor.observe(probe(100, 20, 20, 120));
  REQUIRE(floor.floor() == 100);
  floor.observe(probe(150, 25, 30, 160));  // a candidate of 121 (last id 120 + 1) waits for 30
  // A half message with id 7 was committed: the probe took its rewind note.
  floor.observe(probe(150, 25, 40, 160, 7));
  CHECK(floor.floor() == 7);
  // Once the earlier candidate's transactions end, it is promoted as min(121, 7, lowest pending).
  floor.observe(probe(7, 45, 45, 160));
  CHECK(floor.floor() == 7);
}

TEST_CASE("a row the rescan found below the floor brings it down, and promotions bring it back") {
  ClaimFloor floor;
  floor.observe(probe(100, 10, 10, 120));
  floor.observe(probe(100, 20, 20, 120));
  REQUIRE(floor.floor() == 100);
  // The rescan found row 3, written by hand below the floor; it comes in as a rewind.
  floor.observe(probe(100, 30, 30, 120, /*rewound=*/3));
  CHECK(floor.floor() == 3);
  // Row 3 published: once the transactions running at the probe that saw it have ended, the
  // floor is back where the pending rows are.
  floor.observe(probe(100, 40, 40, 120));
  CHECK(floor.floor() == 3);
  floor.observe(probe(100, 50, 50, 120));
  CHECK(floor.floor() == 100);
}

TEST_CASE("reset forgets the candidates and the sequence value of a lost session") {
  ClaimFloor floor;
  floor.observe(probe(100, 10, 10, 120));
  floor.reset();
  floor.observe(probe(std::nullopt, 20, 20, 130));
  CHECK(floor.floor() == 0);  // the old candidate is gone, and no sequence value is known
}

TEST_CASE("a long writing transaction holds the floor, and the candidates it queues are bounded") {
  ClaimFloor floor;
  for (int i = 0; i < 1000; ++i) {
    floor.observe(probe(100 + i, 5, 10 + static_cast<std::uint64_t>(i), 2000));
  }
  CHECK(floor.floor() == 0);
  // Transaction 5 ends: the newest promotable candidate is taken.
  floor.observe(probe(1200, 2000, 2000, 2000));
  CHECK(floor.floor() >= 100);
  CHECK(floor.floor() <= 1200);
}

TEST_CASE("the floor never rises above the lowest pending row found after the wait") {
  ClaimFloor floor;
  floor.observe(probe(500, 10, 10, 600));
  floor.observe(probe(300, 20, 20, 600));  // 500 was promoted as min(500, 300)
  CHECK(floor.floor() == 300);
}

TEST_CASE(
    "a held topic's rows are risen past while it is held, and its release brings the floor "
    "back to where the hold began") {
  ClaimFloor floor;
  rise_to(floor, 100, 10, 120);
  REQUIRE(floor.floor() == 100);
  // Topic "a" is held: its rows from 100 on are skipped, and the probe finds the lowest other
  // pending row, 5,000.
  floor.hold_routes({"a"});
  rise_to(floor, 5000, 30, 6000);
  REQUIRE(floor.floor() == 5000);
  // Topic "b" is held later, from 5,000; held again and again, neither moves.
  floor.hold_routes({"a", "b"});
  floor.hold_routes({"b", "a"});
  rise_to(floor, 9000, 60, 9500);
  REQUIRE(floor.floor() == 9000);
  // "b" released: back to 5,000, where its rows may start.
  floor.hold_routes({"a"});
  CHECK(floor.floor() == 5000);
  // Candidates found after the release see b's rows again: the floor stays below them.
  floor.observe(probe(5000, 90, 90, 9500));
  floor.observe(probe(5000, 100, 100, 9500));
  CHECK(floor.floor() == 5000);
  // "a" released: back to 100.
  floor.hold_routes({});
  CHECK(floor.floor() == 100);
}

TEST_CASE("a reset while a topic is held makes its release look from the start") {
  ClaimFloor floor;
  rise_to(floor, 100, 10, 120);
  floor.hold_routes({"a"});  // held from 100
  floor.reset();             // lanes taken: their rows of "a" may lie below 100
  rise_to(floor, 5000, 30, 6000);
  REQUIRE(floor.floor() == 5000);
  floor.hold_routes({});
  CHECK(floor.floor() == 0);
}

TEST_CASE("a retry that fails puts the floor back where it stood when the hold ended") {
  ClaimFloor floor;
  floor.hold_routes({"a"});  // held from 0
  rise_to(floor, 5000, 10, 6000);
  REQUIRE(floor.floor() == 5000);
  // The retry: released (back to 0, where "a"'s rows are), claimed, failed, held again.
  floor.hold_routes({});
  REQUIRE(floor.floor() == 0);
  floor.observe(probe(1, 40, 40, 6100));  // "a"'s oldest row is pending again
  floor.hold_routes({"a"});
  CHECK(floor.floor() == 5000);
  // Its next release still goes back to its oldest rows, not to 5,000.
  floor.hold_routes({});
  CHECK(floor.floor() == 0);
}

TEST_CASE("a retry puts the floor back no higher than anything else brought it down to meanwhile") {
  auto held_at_5000 = [] {
    ClaimFloor floor;
    floor.hold_routes({"a", "b"});
    rise_to(floor, 5000, 10, 6000);
    REQUIRE(floor.floor() == 5000);
    floor.hold_routes({"b"});  // "a" is retried
    return floor;
  };
  SUBCASE("a rewind") {
    ClaimFloor floor = held_at_5000();
    floor.observe(probe(1, 40, 40, 6100, /*rewound=*/4000));  // a row made pending again at 4,000
    floor.hold_routes({"a", "b"});
    CHECK(floor.floor() == 4000);  // up only as far as the rewound row
  }
  SUBCASE("a rewind above where the hold ended") {
    ClaimFloor floor = held_at_5000();
    floor.observe(probe(1, 40, 40, 6100, /*rewound=*/5500));  // a half message committed
    floor.hold_routes({"a", "b"});
    CHECK(floor.floor() == 5000);
  }
  SUBCASE("another route's release") {
    ClaimFloor floor = held_at_5000();
    floor.hold_routes({});  // "b"'s rows are claimed again too
    floor.hold_routes({"a"});
    CHECK(floor.floor() == 0);
  }
  SUBCASE("a reset") {
    ClaimFloor floor = held_at_5000();
    floor.reset();
    floor.hold_routes({"a", "b"});
    CHECK(floor.floor() == 0);
  }
}

TEST_CASE(
    "a row made pending below a held topic's start, while it is held, is below where its release "
    "brings the floor back") {
  ClaimFloor floor;
  rise_to(floor, 100, 10, 120);
  floor.hold_routes({"a"});  // held from 100
  rise_to(floor, 5000, 30, 6000);
  REQUIRE(floor.floor() == 5000);
  // A dead row of "a" at 50 is requeued (or the rescan finds one written there by hand): the
  // floor comes down to it, then rises past it again, since "a" is held and 50 is its row.
  floor.observe(probe(std::nullopt, 40, 40, 6000, /*rewound=*/50));
  REQUIRE(floor.floor() == 50);
  rise_to(floor, 5000, 50, 6000);
  REQUIRE(floor.floor() == 5000);
  // Released: the claims start from 50, not from 100, above the row.
  floor.hold_routes({});
  CHECK(floor.floor() == 50);
}
