#include "tests/support/test_database.hpp"

#include <chrono>
#include <thread>

#include "relay/store/store.hpp"
#include "tests/support/services.hpp"

namespace outbox::test {

TestDatabase::TestDatabase(bool notify)
    : name_(unique_name("relay_test")), url_(postgres_server_url() + "/" + name_) {
  pqxx::connection admin{postgres_server_url() + "/postgres"};
  pqxx::nontransaction tx{admin};
  tx.exec("CREATE DATABASE " + tx.quote_name(name_));
  PostgresConfig postgres;
  postgres.url = url_;
  apply_migrations(postgres, notify, RelayConfig{}.lanes);
}

TestDatabase::~TestDatabase() {
  try {
    pqxx::connection admin{postgres_server_url() + "/postgres"};
    pqxx::nontransaction tx{admin};
    tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name_) + " WITH (FORCE)");
  } catch (const std::exception&) {
    // A database left behind is harmless and named for the run; never throw from a destructor.
  }
}

std::string TestDatabase::scalar(const std::string& sql) const {
  pqxx::connection connection{url_};
  pqxx::work tx{connection};
  const pqxx::result result = tx.exec(sql);
  tx.commit();
  return result.empty() || result[0][0].is_null() ? std::string{} : result[0][0].c_str();
}

long long TestDatabase::count(const std::string& where_clause) const {
  return std::stoll(scalar("SELECT count(*) FROM outbox.messages WHERE " + where_clause));
}

long long TestDatabase::settled_figure(const std::string& sql) const {
  long long figure = std::stoll(scalar(sql));
  for (int still = 0, round = 0; still < 10 && round < 200; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const long long now = std::stoll(scalar(sql));
    still = now == figure ? still + 1 : 0;
    figure = now;
  }
  return figure;
}

}  // namespace outbox::test
