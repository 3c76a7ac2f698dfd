// Specifications of least privilege: a writer, the relay and `status` each run as a login that has
// only its documented role (schema/008), and a writer cannot read or change rows it did not write.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <functional>
#include <thread>

#include "tests/support/kafka_reader.hpp"
#include "tests/support/relay_process.hpp"
#include "tests/support/services.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/workload.hpp"

using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

/// A login in one of the outbox's group roles, dropped at the end of the test. The test server
/// trusts loopback connections, so a login needs no password here.
class Login {
 public:
  Login(const std::string& prefix, const std::string& group) : name_(unique_name(prefix)) {
    admin("CREATE ROLE " + name_ + " LOGIN IN ROLE " + group);
  }
  ~Login() {
    try {
      admin("DROP ROLE IF EXISTS " + name_);
    } catch (const std::exception&) {
    }
  }
  /// The database's URL with this login as the user.
  std::string url(const TestDatabase& database) const {
    const std::string base = database.url();
    const auto scheme_end = base.find("://") + 3;
    const auto at = base.find('@', scheme_end);
    return base.substr(0, scheme_end) + name_ + base.substr(at);
  }
  const std::string& name() const { return name_; }

 private:
  static void admin(const std::string& sql) {
    pqxx::connection connection{postgres_server_url() + "/postgres"};
    pqxx::nontransaction tx{connection};
    tx.exec(sql);
  }
  std::string name_;
};

template <typename Work>
void as(const std::string& url, Work&& work) {
  pqxx::connection connection{url};
  pqxx::work tx{connection};
  work(tx);
  tx.commit();
}

}  // namespace

TEST_CASE("each job runs with its role only, and a writer cannot touch another writer's rows") {
  REQUIRE_SERVICES();
  TestDatabase database;  // migrated by the owner (the test server's superuser)
  const std::string topic = unique_name("roles");
  Login writer_a("writer_a", "outbox_writer"), writer_b("writer_b", "outbox_writer");
  Login relay_login("relay", "outbox_relay"), reader("reader", "outbox_reader");

  long long half_of_a = 0;
  as(writer_a.url(database), [&](pqxx::work& tx) {
    tx.exec_params("SELECT outbox.publish($1, 'a', 'from a'::text)", topic);
    half_of_a = tx.exec_params1(
                      "SELECT outbox.prepare($1, 'a', 'half of a'::text, '{}'::jsonb,"
                      " 'group-a', 'tx-1')",
                      topic)[0]
                    .as<long long>();
  });
  CHECK(database.scalar("SELECT written_by FROM outbox.messages WHERE id = " +
                        std::to_string(half_of_a)) == writer_a.name());

  // Writer b: no direct access at all, and the API acts on its own rows only.
  const std::string b = writer_b.url(database);
  CHECK_THROWS_WITH(as(b, [](pqxx::work& tx) { tx.exec("SELECT * FROM outbox.messages"); }),
                    doctest::Contains("permission denied"));
  CHECK_THROWS_WITH(
      as(b, [](pqxx::work& tx) { tx.exec("UPDATE outbox.messages SET payload = 'forged'"); }),
      doctest::Contains("permission denied"));
  CHECK_THROWS_WITH(as(b, [](pqxx::work& tx) { tx.exec("SELECT outbox.requeue(1)"); }),
                    doctest::Contains("permission denied"));
  as(b, [&](pqxx::work& tx) {
    CHECK(tx.exec_params1("SELECT outbox.rollback($1)", half_of_a)[0].as<int>() == 0);
    CHECK(tx.exec1("SELECT outbox.rollback('group-a', 'tx-1')")[0].as<int>() == 0);
  });
  CHECK(database.count("id = " + std::to_string(half_of_a) + " AND state = 'unknown'") == 1);
  as(writer_a.url(database), [&](pqxx::work& tx) {
    CHECK(tx.exec_params1("SELECT outbox.commit($1)", half_of_a)[0].as<int>() == 1);
  });

  // The relay as its own login publishes both; status reads as the reader.
  RelayProcess relay(
      write_relay_config(relay_login.url(database), {{"retention.vacuum_dead_rows", "0"}}));
  REQUIRE_MESSAGE(eventually([&] { return database.count("state = 'published'") == 2; }, 30s),
                  relay.log_tail());
  CHECK(read_topic(topic).size() == 2);
  const std::string reader_config = write_relay_config(reader.url(database));
  CHECK(relay_command("status --json --config " + reader_config).exit_code == 0);
  CHECK(relay_command("lanes show --config " + reader_config).output == "lanes 16\n");
  CHECK(relay.terminate() == 0);
}

TEST_CASE(
    "the oldest-transaction figure sees prepared transactions and other roles' transactions") {
  REQUIRE_SERVICES();
  TestDatabase database;
  if (database.scalar("SHOW max_prepared_transactions") == "0") {
    // scripts/services up enables two-phase commit on the cluster it manages.
    MESSAGE(RELAY_TEST_SKIP_MARK "max_prepared_transactions is 0 on this server");
    return;
  }
  const Login reader("status_login", "outbox_reader");
  const std::string config = write_relay_config(reader.url(database));
  auto oldest = [&] {
    const CommandResult status = relay_command("status --json --config " + config);
    REQUIRE_MESSAGE(status.exit_code == 0, status.errors);
    return nlohmann::json::parse(status.output)["oldest_transaction_age_seconds"].get<double>();
  };
  CHECK(oldest() < 1.0);

  // A prepared transaction belongs to no session: pg_stat_activity does not show it.
  const std::string gid = unique_name("prepared");
  {
    pqxx::connection connection = database.connect();
    pqxx::nontransaction tx{connection};
    // (not an outbox row: publish NOTIFYs, and a transaction that did cannot be prepared)
    tx.exec("CREATE TABLE IF NOT EXISTS two_phase (n int)");
    tx.exec("BEGIN");
    tx.exec("INSERT INTO two_phase VALUES (1)");
    tx.exec("PREPARE TRANSACTION '" + gid + "'");
  }  // the session ends; the transaction stays, prepared
  auto commit_prepared = [&] {
    pqxx::connection connection = database.connect();
    pqxx::nontransaction tx{connection};  // COMMIT PREPARED runs outside a transaction block
    tx.exec("COMMIT PREPARED '" + gid + "'");
  };
  // Committed however the test ends, or the database could not be dropped.
  struct AtEnd {
    std::function<void()> work;
    bool done = false;
    ~AtEnd() {
      try {
        if (!done) work();
      } catch (const std::exception&) {
      }
    }
  } at_end{commit_prepared};
  CHECK_MESSAGE(eventually([&] { return oldest() >= 1.0; }, 15s), "prepared transaction unseen");

  commit_prepared();
  at_end.done = true;
  CHECK(eventually([&] { return oldest() < 1.0; }, 15s));

  // Another role's open transaction: its xact_start is visible to the reader role only through
  // pg_read_all_stats. Without the README's grant the figure is blind to it; with it, it sees it.
  database.execute("REVOKE pg_read_all_stats FROM outbox_reader");
  pqxx::connection other = database.connect();  // the superuser, another role than the reader's
  pqxx::work open{other};
  open.exec("SELECT txid_current()");
  std::this_thread::sleep_for(1500ms);  // old enough to be seen, were it visible
  CHECK(oldest() < 1.0);
  database.execute("GRANT pg_read_all_stats TO outbox_reader");  // as the README says
  CHECK_MESSAGE(eventually([&] { return oldest() >= 1.0; }, 15s),
                "another role's transaction unseen");
  open.abort();
}
