// An example writer of half messages, RocketMQ style, for the README's check-back walkthrough.
//
// For each payment it: (1) in one transaction, inserts the payment as 'pending' and a half message
// (outbox.prepare); (2) calls a simulated card processor; (3) records the outcome, 'charged' or
// 'failed', in its own table; (4) commits or rolls the half message back. With --crash-rate it
// "crashes" between (3) and (4) for that share of payments, leaving the half message 'unknown':
// the relay's sweeper then asks this program's status-check endpoint, which answers from the
// payments table. It keeps serving the endpoint for --serve-seconds after writing.
#include <httplib.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <random>
#include <thread>

namespace {

constexpr const char* kGroup = "example-writer";

/// The endpoint: POST /outbox/check with the relay's JSON; the answer comes from our own table.
void serve_status_checks(httplib::Server& server, const std::string& database_url) {
  server.Post("/outbox/check",
              [database_url](const httplib::Request& request, httplib::Response& response) {
                const auto body = nlohmann::json::parse(request.body, nullptr, false);
                if (!body.is_object() || !body.contains("transaction_id")) {
                  response.status = 400;
                  return;
                }
                pqxx::connection connection{database_url};
                pqxx::work tx{connection};
                const pqxx::result row =
                    tx.exec_params("SELECT status FROM example_payments WHERE transaction_id = $1",
                                   body["transaction_id"].get<std::string>());
                // Charged: the event must go out. Failed, or never recorded: it must not. Still
                // pending: the card processor has not answered yet, so we do not know.
                std::string status = "ROLLBACK";
                if (!row.empty() && row[0][0].as<std::string>() == "charged") status = "COMMIT";
                if (!row.empty() && row[0][0].as<std::string>() == "pending") status = "UNKNOWN";
                response.set_content(nlohmann::json{{"status", status}}.dump(), "application/json");
              });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Writes payments with half messages and serves their status-check endpoint."};
  std::string database_url = "postgresql://postgres@127.0.0.1:5432/outbox";
  int payments = 100;
  double crash_rate = 0.0;
  int port = 8089;
  int serve_seconds = 0;
  app.add_option("--database", database_url, "PostgreSQL URL")->capture_default_str();
  app.add_option("--payments", payments, "Payments to write")->capture_default_str();
  app.add_option("--crash-rate", crash_rate,
                 "Share of payments whose writer 'crashes' before "
                 "committing or rolling back its half message")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--port", port, "Status-check endpoint port on 127.0.0.1")->capture_default_str();
  app.add_option("--serve-seconds", serve_seconds, "Keep serving checks this long after writing")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    pqxx::connection connection{database_url};
    {
      pqxx::work tx{connection};
      tx.exec(
          "CREATE TABLE IF NOT EXISTS example_payments ("
          " transaction_id text PRIMARY KEY, amount_cents int NOT NULL,"
          " status text NOT NULL CHECK (status IN ('pending', 'charged', 'failed')))");
      tx.commit();
    }
    httplib::Server server;
    serve_status_checks(server, database_url);
    if (!server.bind_to_port("127.0.0.1", port)) {
      std::cerr << "checkback-writer: cannot listen on 127.0.0.1:" << port << '\n';
      return 1;
    }
    std::thread listener([&] { server.listen_after_bind(); });

    std::mt19937 random(std::random_device{}());
    std::bernoulli_distribution card_accepted(0.7), crashes(crash_rate);
    const std::string run =
        std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
    int charged = 0, failed = 0, crashed = 0;
    for (int i = 0; i < payments; ++i) {
      const std::string transaction_id = "pay-" + run + "-" + std::to_string(i);
      const int amount = 100 + static_cast<int>(random() % 10'000);
      {  // (1) the business row and the half message, atomically
        pqxx::work tx{connection};
        tx.exec_params("INSERT INTO example_payments VALUES ($1, $2, 'pending')", transaction_id,
                       amount);
        tx.exec_params(
            "SELECT outbox.prepare('example.payments', $1,"
            "  jsonb_build_object('transaction_id', $1::text, 'amount_cents', $2::int),"
            "  '{\"type\": \"PaymentCaptured\"}'::jsonb, $3, $1)",
            transaction_id, amount, kGroup);
        tx.commit();
      }
      const bool accepted = card_accepted(random);  // (2) the uncertain remote step
      {                                             // (3) its outcome, in our own table
        pqxx::work tx{connection};
        tx.exec_params("UPDATE example_payments SET status = $2 WHERE transaction_id = $1",
                       transaction_id, accepted ? "charged" : "failed");
        tx.commit();
      }
      (accepted ? charged : failed)++;
      if (crashes(random)) {  // the writer dies here; the sweeper will ask us
        ++crashed;
        continue;
      }
      pqxx::work tx{connection};  // (4) decide the half message
      tx.exec_params(accepted ? "SELECT outbox.commit($1, $2)" : "SELECT outbox.rollback($1, $2)",
                     kGroup, transaction_id);
      tx.commit();
    }
    std::cout << "payments: " << payments << " (charged " << charged << ", failed " << failed
              << "); half messages left undecided by a 'crash': " << crashed << '\n';
    if (serve_seconds > 0) {
      std::cout << "serving status checks on http://127.0.0.1:" << port << "/outbox/check for "
                << serve_seconds << " s" << std::endl;
      std::this_thread::sleep_for(std::chrono::seconds(serve_seconds));
    }
    server.stop();
    listener.join();
  } catch (const std::exception& error) {
    std::cerr << "checkback-writer: " << error.what() << '\n';
    return 1;
  }
  return 0;
}
