// Specification of secrecy: no password, token or key material of the configuration reaches any
// output of the relay or its commands, at the most verbose log level, whatever libpq, librdkafka
// or libcurl put in their own texts.
#include <doctest/doctest.h>

#include <regex>

#include "tests/support/relay_process.hpp"
#include "tests/support/services.hpp"
#include "tests/support/status_endpoint.hpp"
#include "tests/support/test_database.hpp"

using namespace outbox::test;
using namespace std::chrono_literals;

TEST_CASE("no secret of the configuration reaches any output, at the most verbose log level") {
  REQUIRE_SERVICES();
  TestDatabase database;
  StatusEndpoint endpoint([](const nlohmann::json&) { return StatusEndpoint::status("COMMIT"); });
  const std::string topic = unique_name("secrets");
  // Every secret contains "Secret", which nothing else the relay prints does. PostgreSQL trusts
  // local connections here, so the relay really connects with this password.
  const std::string url =
      std::regex_replace(database.url(), std::regex("://([^@/]+)@"), "://$1:Pg-Secret-9f2@");
  const std::string endpoint_url =
      std::regex_replace(endpoint.url(), std::regex("http://"), "http://checker:Url-Secret-4b1@");
  const std::string config = write_relay_config(
      url, {{"logging.level", "trace"},
            {"kafka.properties", "{debug: all, ssl.key.password: Kafka-Secret-7c3}"},
            {"checkback.check_delay_ms", "200"},
            {"checkback.sweep_interval_ms", "100"},
            {"checkback.endpoints", "{secret-group: {url: \"" + endpoint_url +
                                        "\", authorization: \"Bearer Token-Secret-e5d\"}}"}});

  std::vector<std::pair<std::string, std::string>> outputs;
  {
    RelayProcess relay(config);
    database.execute("SELECT outbox.publish($1, 'k', 'v'::text)", topic);
    database.execute("SELECT outbox.prepare($1, 'k', 'h'::text, '{}'::jsonb, 'secret-group', 't')",
                     topic);
    REQUIRE_MESSAGE(eventually([&] { return database.count("state = 'published'") == 2; }, 30s),
                    relay.log_tail());
    CHECK(endpoint.total_requests() >= 1);
    outputs.emplace_back("run", relay.log_tail(std::string::npos));
  }
  for (const std::string command :
       {"check-config", "status", "status --json", "dead list", "lanes show", "migrate"}) {
    const CommandResult result = relay_command(command + " --config " + config);
    outputs.emplace_back(command, result.output + result.errors);
  }
  // A PostgreSQL that refuses: libpq's error text goes to stderr.
  const std::string unreachable = write_relay_config(
      std::regex_replace(url, std::regex(":5432/"), ":1/"), {{"logging.level", "trace"}});
  const CommandResult refused = relay_command("status --config " + unreachable);
  CHECK(refused.exit_code == 1);
  outputs.emplace_back("status, PostgreSQL unreachable", refused.output + refused.errors);

  for (const auto& [what, text] : outputs) {
    CAPTURE(what);
    CHECK(!text.empty());
    const auto at = text.find("Secret");
    CHECK_MESSAGE(at == std::string::npos,
                  text.substr(at == std::string::npos ? 0 : (at > 200 ? at - 200 : 0), 400));
  }
}
