// Writer overhead: what the outbox insert, and its NOTIFY, cost an application's transactions.
// pgbench runs one business transaction per case: the business row alone; with an outbox row and
// NOTIFY off; with NOTIFY on; and with NOTIFY off and the relay (adaptive polling, the default)
// publishing at the same time, on the same cores.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <pqxx/pqxx>

#include "bench/benchmarks.hpp"

namespace outbox::bench {

namespace {

std::string pgbench_path(const std::string& url) {
  pqxx::connection connection{url};
  const int major = connection.server_version() / 10000;
  return "/usr/lib/postgresql/" + std::to_string(major) + "/bin/pgbench";
}

/// Runs pgbench on `script_sql` and returns the transactions per second it reports.
double pgbench_tps(const std::string& pgbench, const std::string& url,
                   const std::string& script_sql, int clients, int seconds) {
  const std::string script = "/tmp/relay_bench_" + std::to_string(getpid()) + ".pgbench";
  std::ofstream(script) << script_sql;
  const std::string command = pgbench + " -n -c " + std::to_string(clients) + " -j 2 -T " +
                              std::to_string(seconds) + " -f " + script + " '" + url + "' 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> output(popen(command.c_str(), "r"), pclose);
  if (!output) throw std::runtime_error("cannot run " + pgbench);
  double tps = -1;
  char line[512];
  while (std::fgets(line, sizeof line, output.get()) != nullptr) {
    std::sscanf(line, "tps = %lf", &tps);
  }
  std::remove(script.c_str());
  if (tps < 0) throw std::runtime_error("pgbench printed no tps; command: " + command);
  return tps;
}

}  // namespace

int writer_overhead(const Options& options, int clients, int seconds) {
  BenchDatabase database(options, /*notify=*/false);
  {
    pqxx::connection connection{database.url()};
    pqxx::nontransaction(connection)
        .exec(
            "CREATE TABLE bench_orders (id bigserial PRIMARY KEY, customer int NOT NULL,"
            " amount numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now())");
  }
  const std::string pgbench = pgbench_path(database.url());
  const std::string business =
      "\\set customer random(1, " + std::to_string(options.keys) +
      ")\nBEGIN;\nINSERT INTO bench_orders (customer, amount) VALUES (:customer, 10);\n";
  const std::string with_outbox = business +
                                  "SELECT outbox.publish('bench.orders', 'customer-' || :customer, "
                                  "'{\"amount\": 10}'::jsonb);\n";
  auto run_case = [&](const char* name, const std::string& script) {
    std::cerr << "bench: pgbench " << name << ", " << clients << " clients, " << seconds << " s\n";
    return pgbench_tps(pgbench, database.url(), script + "COMMIT;\n", clients, seconds);
  };
  auto set_notify = [&](bool on) {
    pqxx::connection connection{database.url()};
    pqxx::nontransaction(connection).exec_params("SELECT outbox.set_notify($1)", on);
  };

  const double business_only = run_case("business row only", business);
  const double outbox_plain = run_case("+ outbox row, NOTIFY off", with_outbox);
  set_notify(true);
  const double outbox_notify = run_case("+ outbox row, NOTIFY on", with_outbox);
  set_notify(false);
  double outbox_relay = 0;
  {
    BenchRelay relay(options, database.url());  // the default: adaptive polling
    outbox_relay = run_case("+ outbox row, relay polling and publishing", with_outbox);
  }
  std::cout << "writer-overhead clients=" << clients << " seconds=" << seconds
            << " tps_business_only=" << business_only << " tps_outbox=" << outbox_plain
            << " tps_outbox_notify=" << outbox_notify
            << " tps_outbox_relay_running=" << outbox_relay
            << " notify_cost_percent=" << 100 * (1 - outbox_notify / outbox_plain) << "\n";
  return 0;
}

}  // namespace outbox::bench
