// Reads the relay lag from the outbox table with cheap queries: each touches only the partial
// indexes of pending, unknown or dead rows, never the published history.
#pragma once

#include <memory>
#include <string>

#include "relay/config/config.hpp"
#include "relay/core/lag.hpp"

namespace outbox {

class LazySession;  // relay/store/lazy_session.hpp

/// Per topic, rows that finished (published, rolled back, discarded) in the last minute, and how
/// many of them were published. Bounded by the finished-rows index, so the history kept for audit
/// is never read; a function of its own so a test can check exactly that.
std::string finished_last_minute_sql(const RoutingConfig& routing);

/// One PostgreSQL session. Not thread-safe. Throws StoreUnavailable (store.hpp); reconnects on the
/// next call.
class LagReader {
 public:
  LagReader(const PostgresConfig& postgres, const RoutingConfig& routing);
  ~LagReader();
  LagReader(const LagReader&) = delete;
  LagReader& operator=(const LagReader&) = delete;

  LagSnapshot read();

 private:
  RoutingConfig routing_;
  std::unique_ptr<LazySession> session_;
};

}  // namespace outbox
