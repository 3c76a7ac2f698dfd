// The lane count every instance of an outbox shares (outbox.relay_settings, schema/006), and the
// instance membership it is checked against. Private to relay/store (it includes pqxx).
#pragma once

#include <pqxx/pqxx>

namespace outbox {

// Held in shared mode as the advisory lock (kMemberLockClass, 0) by every claiming session, so
// that pg_locks counts the instances. Advisory locks are per database.
constexpr int kMemberLockClass = 0x6f62786d;  // "obxm"

/// Stores `lanes` when no count is stored yet, then compares; throws LaneCountMismatch (store.hpp)
/// when another is stored.
void agree_on_lane_count(pqxx::connection& connection, int lanes);

/// Relay instances connected to this database's outbox right now.
int count_instances(pqxx::transaction_base& tx);

}  // namespace outbox
