// Strong types for the identifiers the relay passes between modules.
#pragma once

#include <compare>
#include <cstdint>

namespace outbox {

/// The outbox row's primary key (a bigint identity column).
struct OutboxId {
  std::int64_t value = 0;
  auto operator<=>(const OutboxId&) const = default;
};

/// One slice of the key space; every row of one key maps to the same lane, and a lane is owned by
/// at most one relay instance at a time.
struct LaneId {
  std::int32_t value = 0;
  auto operator<=>(const LaneId&) const = default;
};

}  // namespace outbox
