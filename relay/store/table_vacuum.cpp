#include "relay/store/table_vacuum.hpp"

#include <pqxx/pqxx>

#include "relay/store/lazy_session.hpp"
#include "relay/store/sql_errors.hpp"
#include "relay/store/store.hpp"

namespace outbox {

OutboxVacuum::OutboxVacuum(const PostgresConfig& postgres)
    : session_(std::make_unique<LazySession>(postgres)) {}
OutboxVacuum::~OutboxVacuum() = default;

template <typename Work>
auto OutboxVacuum::with_connection(const char* what, Work&& work) {
  return session_->run(what, [&](pqxx::connection& connection) {
    pqxx::nontransaction tx{connection};
    return work(tx);
  });
}

bool OutboxVacuum::allowed() {
  return with_connection("check the right to vacuum outbox.messages", [](auto& tx) {
    return tx
        .exec1(
            "SELECT pg_has_role(current_user, c.relowner, 'MEMBER')"
            "       OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
            "  FROM pg_class c WHERE c.oid = 'outbox.messages'::regclass")[0]
        .template as<bool>();
  });
}

std::int64_t OutboxVacuum::dead_row_versions() {
  return with_connection("read the dead rows of outbox.messages", [](auto& tx) {
    return tx
        .exec1(
            "SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables"
            " WHERE relid = 'outbox.messages'::regclass")[0]
        .template as<std::int64_t>();
  });
}

void OutboxVacuum::run() {
  with_connection("vacuum outbox.messages", [](auto& tx) {
    // A VACUUM of a large table may rightly take longer than the relay sessions'
    // statement_timeout; it is cancellable, and SKIP_LOCKED never waits on locks.
    tx.exec("SET statement_timeout = 0");
    tx.exec("VACUUM (SKIP_LOCKED) outbox.messages");
  });
}

}  // namespace outbox
