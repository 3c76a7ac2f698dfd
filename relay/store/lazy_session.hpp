// One PostgreSQL session, opened on first use (with the relay's session settings, and whatever
// statements its owner prepares) and dropped when it breaks, so that the next use reconnects. How
// every store class but the claimer holds its connection. Private to relay/store (it includes
// pqxx); the classes that use it hold it by unique_ptr.
#pragma once

#include <functional>
#include <memory>
#include <pqxx/pqxx>
#include <string>

#include "relay/store/sql_errors.hpp"
#include "relay/store/store.hpp"

namespace outbox {

class LazySession {
 public:
  using Prepare = std::function<void(pqxx::connection&)>;
  explicit LazySession(PostgresConfig postgres, Prepare prepare = {})
      : postgres_(std::move(postgres)), prepare_(std::move(prepare)) {}

  /// Runs `work(connection)`, connecting first when there is no session; retriable failures
  /// become StoreUnavailable("could not <what>: ..."), and a lost session is dropped.
  template <typename Work>
  auto run(const std::string& what, Work&& work) {
    return with_store_errors(
        what, [&] { return work(connection()); }, [this] { connection_.reset(); });
  }

  /// Drops the session; the next run() reconnects.
  void reset() noexcept { connection_.reset(); }

 private:
  pqxx::connection& connection() {
    if (!connection_) {
      auto opened = std::make_unique<pqxx::connection>(session_connection_string(postgres_));
      if (prepare_) prepare_(*opened);
      connection_ = std::move(opened);
    }
    return *connection_;
  }

  PostgresConfig postgres_;
  Prepare prepare_;
  std::unique_ptr<pqxx::connection> connection_;
};

}  // namespace outbox
