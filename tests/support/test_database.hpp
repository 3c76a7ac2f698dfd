// A fresh, migrated database per test, dropped at the end: tests never see each other's rows.
#pragma once

#include <pqxx/pqxx>
#include <string>

namespace outbox::test {

class TestDatabase {
 public:
  /// Creates and migrates the database. `notify` sets the wake-up trigger.
  explicit TestDatabase(bool notify = true);
  ~TestDatabase();
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  const std::string& url() const { return url_; }
  /// A new connection to this database.
  pqxx::connection connect() const { return pqxx::connection{url_}; }
  /// Runs one statement with parameters ($1, $2, ...) in its own committed transaction.
  template <typename... Params>
  void execute(const std::string& sql, Params&&... params) const {
    pqxx::connection connection{url_};
    pqxx::work tx{connection};
    tx.exec_params(sql, std::forward<Params>(params)...);
    tx.commit();
  }
  /// Runs one statement in its own transaction and returns the first column of the first row.
  std::string scalar(const std::string& sql) const;
  long long count(const std::string& where_clause) const;
  /// The number `sql` reads (from PostgreSQL's statistics views) once it has held still for a
  /// second, or after 20 s: a session's reads reach those views only when it ends or goes idle.
  long long settled_figure(const std::string& sql) const;

 private:
  std::string name_;
  std::string url_;
};

}  // namespace outbox::test
