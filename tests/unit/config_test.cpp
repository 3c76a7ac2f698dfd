// Specifications of the configuration loader: what it accepts, and how it names what it refuses.
#include <doctest/doctest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "relay/config/config.hpp"
#include "relay/core/redaction.hpp"

using namespace outbox;
using namespace std::chrono_literals;

namespace {

bool no_environment(const std::string&, std::string&) { return false; }

bool test_environment(const std::string& name, std::string& value) {
  static const std::map<std::string, std::string> variables{
      {"PG_URL", "postgresql://db/app"}, {"BATCH", "250"}, {"KAFKA_PASSWORD", "s3cret"}};
  const auto found = variables.find(name);
  if (found == variables.end()) return false;
  value = found->second;
  return true;
}

const std::string kRequired =
    "postgres:\n"
    "  url: postgresql://postgres@127.0.0.1/outbox\n"
    "kafka:\n"
    "  bootstrap_servers: 127.0.0.1:9092\n";

Config load(const std::string& yaml) {
  return load_config_text(yaml, "relay.yaml", test_environment);
}

/// The error loading `yaml` raises; fails the test when it loads.
ConfigError error_of(const std::string& yaml) {
  try {
    load(yaml);
  } catch (const ConfigError& error) {
    return error;
  }
  FAIL("expected a ConfigError for:\n" << yaml);
  return ConfigError("", 0, "", "");
}

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace

TEST_CASE("the required keys alone give a configuration with every default") {
  const Config config = load(kRequired);
  CHECK(config.postgres.url == "postgresql://postgres@127.0.0.1/outbox");
  CHECK(config.kafka.bootstrap_servers == "127.0.0.1:9092");
  CHECK(config.kafka.delivery_timeout == 0ms);
  CHECK(config.relay.batch_size == 1000);
  CHECK(config.relay.max_in_flight_batches == 4);
  CHECK_FALSE(config.relay.notify);  // adaptive polling: NOTIFY costs writers (bench/RESULTS.md)
  CHECK(config.relay.poll_interval_min == 5ms);
  CHECK(config.relay.poll_interval == 1000ms);
  CHECK(config.relay.lanes == 16);
  CHECK(config.relay.dead_key_policy == DeadKeyPolicy::block);
  CHECK(config.routing.topic_column == "topic");
  CHECK(config.routing.topic_pattern == "{value}");
  CHECK(config.logging.format == LogFormat::text);
}

TEST_CASE("every key can be set, including librdkafka pass-through properties") {
  const Config config = load(kRequired +
                             "  delivery_timeout_ms: 30000\n"
                             "  compression: zstd\n"
                             "  properties:\n"
                             "    security.protocol: SASL_SSL\n"
                             "    socket.keepalive.enable: true\n"
                             "relay:\n"
                             "  batch_size: 50\n"
                             "  notify: false\n"
                             "  dead_key_policy: skip\n"
                             "routing:\n"
                             "  topic_column: aggregate_type\n"
                             "  topic_pattern: outbox.event.{value}\n"
                             "logging:\n"
                             "  format: json\n");
  CHECK(config.kafka.delivery_timeout == 30000ms);
  CHECK(config.kafka.compression == "zstd");
  CHECK(config.kafka.properties.at("security.protocol") == "SASL_SSL");
  CHECK(config.kafka.properties.at("socket.keepalive.enable") == "true");
  CHECK(config.relay.batch_size == 50);
  CHECK_FALSE(config.relay.notify);
  CHECK(config.relay.dead_key_policy == DeadKeyPolicy::skip);
  CHECK(config.routing.topic_column == "aggregate_type");
  CHECK(config.logging.format == LogFormat::json);
}

TEST_CASE("an unknown key names the file, the line and the closest known key") {
  const ConfigError error = error_of(kRequired + "relay:\n  batch_sise: 10\n");
  CHECK(error.file() == "relay.yaml");
  CHECK(error.line() == 6);
  CHECK(error.key() == "relay.batch_sise");
  CHECK(std::string(error.what()) ==
        "relay.yaml:6: relay.batch_sise: unknown key; did you mean relay.batch_size?");
  CHECK(error_of(kRequired + "relya:\n  batch_size: 10\n").key() == "relya");
}

TEST_CASE("out-of-range values, wrong types and bad choices name their key and line") {
  CHECK(std::string(error_of(kRequired + "relay:\n  batch_size: 0\n").what()) ==
        "relay.yaml:6: relay.batch_size: must be between 1 and 100000 (got 0)");
  CHECK(error_of(kRequired + "relay:\n  batch_size: many\n").why() ==
        "must be a whole number (got 'many')");
  CHECK(error_of(kRequired + "relay:\n  notify: maybe\n").key() == "relay.notify");
  CHECK(error_of(kRequired + "relay:\n  lanes: 12\n").why() == "must be a power of two (got 12)");
  CHECK(std::string(error_of(kRequired + "relay:\n  poll_interval_min_ms: 50\n"
                                         "  poll_interval_ms: 20\n")
                        .what()) ==
        "relay.yaml:7: relay.poll_interval_ms: must be at least relay.poll_interval_min_ms");
  CHECK(error_of(kRequired + "relay:\n  dead_key_policy: drop\n").line() == 6);
  CHECK(error_of(kRequired + "relay:\n  batch_size: [1, 2]\n").why() ==
        "must be a single value, not a list or map");
  CHECK(error_of(kRequired + "relay: 5\n").why() == "must be a map of keys");
  CHECK(error_of(kRequired + "relay:\n  backoff_initial_ms: 500\n  backoff_max_ms: 100\n").key() ==
        "relay.backoff_max_ms");
  CHECK(error_of(kRequired + "routing:\n  topic_column: \"topic; DROP TABLE x\"\n").key() ==
        "routing.topic_column");
  CHECK(error_of(kRequired + "logging:\n  level: loud\n").why() ==
        "must be one of trace|debug|info|warn|error (got 'loud')");
}

TEST_CASE("a missing required key and broken YAML are errors too") {
  const ConfigError missing = error_of("kafka:\n  bootstrap_servers: x:1\n");
  CHECK(missing.key() == "postgres.url");
  CHECK(missing.why() == "is required");
  const ConfigError syntax = error_of(kRequired + "relay:\n  batch_size: [1\n");
  CHECK(syntax.line() >= 6);
  CHECK(syntax.why().find("invalid YAML") == 0);
  CHECK(error_of("- a\n- b\n").why() == "the document must be a map");
}

TEST_CASE("a file that cannot be read is named") {
  try {
    load_config_file("/nonexistent/relay.yaml", no_environment);
    FAIL("expected an error");
  } catch (const ConfigError& error) {
    CHECK(std::string(error.what()) == "/nonexistent/relay.yaml: cannot read the file");
  }
}

TEST_CASE("environment variables are substituted, with defaults and $$ for a literal dollar") {
  const Config config = load(
      "postgres:\n  url: ${PG_URL}\n"
      "kafka:\n  bootstrap_servers: ${KAFKA:-localhost:9092}\n"
      "  properties:\n    sasl.password: ${KAFKA_PASSWORD}\n"
      "relay:\n  batch_size: ${BATCH}\n"
      "routing:\n  topic_pattern: cost$$.{value}\n");
  CHECK(config.postgres.url == "postgresql://db/app");
  CHECK(config.kafka.bootstrap_servers == "localhost:9092");
  CHECK(config.kafka.properties.at("sasl.password") == "s3cret");
  CHECK(config.relay.batch_size == 250);
  CHECK(config.routing.topic_pattern == "cost$.{value}");
}

TEST_CASE("an undefined variable stops start-up, naming the variable and the key") {
  const ConfigError error = error_of(kRequired + "relay:\n  batch_size: ${UNDEFINED_BATCH}\n");
  CHECK(error.key() == "relay.batch_size");
  CHECK(error.line() == 6);
  CHECK(error.why().find("UNDEFINED_BATCH is not defined") != std::string::npos);
}

TEST_CASE("passwords never survive redaction, in URI or keyword form, well formed or not") {
  CHECK(redact_postgres_url("postgresql://app:s3cret@db:5432/x") ==
        "postgresql://app:***@db:5432/x");
  CHECK(redact_postgres_url("postgres://app@db/x") == "postgresql://app@db/x");
  CHECK(redact_postgres_url("host=db password=s3cret user=app") == "postgresql://app:***@db/");
  CHECK(redact_postgres_url("host=db password='a b' user=app dbname=x") ==
        "postgresql://app:***@db/x");
  // Malformed: a bad percent-escape, a space, an '@' in the password. libpq's own messages for
  // these quote the password, and a pattern once printed its tail.
  for (const std::string url : {"postgresql://app:s3cr%zzet@db/x", "postgresql://app:s3c ret@db/x",
                                "postgresql://app:s3c@ret@db/x", "host=db password='s3cret"}) {
    CAPTURE(url);
    const std::string shown = redact_postgres_url(url);
    CHECK(shown.find("s3c") == std::string::npos);
    CHECK(shown.find("ret") == std::string::npos);
  }
}

TEST_CASE("every secret of the configuration is known to the redactor, however it is written") {
  auto secrets_of = [](const std::string& yaml) {
    return SecretRedactor(configured_secrets(load_config_text(yaml, "test.yaml", no_environment)));
  };
  const std::string kafka =
      "kafka: {bootstrap_servers: b:9092, properties: {"
      "sasl.password: kafka-pw-1, ssl.key.password: kafka-pw-2, "
      "sasl.oauthbearer.client.secret: kafka-pw-3, client.id: relay-7}}\n";
  const std::string endpoints =
      "checkback: {endpoints: {g: {url: \"https://u:url-pw-4@h/check\", "
      "authorization: \"Bearer token-5\"}}}\n";
  // libpq's own messages for malformed URLs, which quote the password they could not read.
  for (const std::string url :
       {"postgresql://app:s3cr%zzet@db/x", "postgresql://app:s3c ret@db/x",
        "postgresql://app:s3c@ret@db/x", "postgresql://app:s3cr%21et@db/x"}) {
    CAPTURE(url);
    const SecretRedactor secrets =
        secrets_of("postgres: {url: \"" + url + "\"}\n" + kafka + endpoints);
    const std::string password = url.substr(18, url.rfind('@') - 18);
    const std::string leaked = "invalid percent-encoded token: \"" + password +
                               "\"; could not translate host name \"" + password + "\"";
    CHECK(secrets.redact(leaked).find("s3c") == std::string::npos);
    const std::string other = secrets.redact(
        "kafka-pw-1 kafka-pw-2 kafka-pw-3 url-pw-4 Bearer token-5 token-5 client relay-7");
    CHECK(other == "*** *** *** *** *** *** client relay-7");
  }
  // Decoded too: libpq hands the server, and its errors quote, the password percent-decoded.
  CHECK(secrets_of("postgres: {url: \"postgresql://app:s3cr%21et@db/x\"}\n" + kafka)
            .redact("s3cr!et") == "***");
  CHECK(secrets_of("postgres: {url: \"host=db password='s3cr et' user=app\"}\n" + kafka)
            .redact("password='s3cr et'") == "password='***'");
}

TEST_CASE("the redactor cuts each secret whole, longest first, and leaves short values alone") {
  const SecretRedactor secrets({"abcdef", "abcd", "xyz", ""});
  CHECK(secrets.redact("abcdefgh abcd xyz") == "***gh *** xyz");
  CHECK(secrets.redact("abcdabcdabcd") == "*********");
  CHECK(SecretRedactor().redact("nothing to hide") == "nothing to hide");
}

TEST_CASE("every key's declared default is the value a configuration has when the key is unset") {
  // The two places defaults live (the key table's text, shown in the README, and the structs'
  // member initialisers, used when a key is absent) must say the same, key by key.
  auto yaml_with = [](const std::string& dotted, const std::string& value) {
    std::map<std::string, std::map<std::string, std::string>> sections;
    sections["postgres"]["url"] = "postgresql://app@db/x";
    sections["kafka"]["bootstrap_servers"] = "b:9092";
    if (!dotted.empty()) {
      const auto dot = dotted.find('.');
      sections[dotted.substr(0, dot)][dotted.substr(dot + 1)] = value;
    }
    std::string yaml;
    for (const auto& [section, keys] : sections) {
      yaml += section + ":\n";
      for (const auto& [key, text] : keys) yaml += "  " + key + ": " + text + "\n";
    }
    return yaml;
  };
  const Config unset = load_config_text(yaml_with("", ""), "defaults.yaml", no_environment);
  const auto defaults = declared_scalar_defaults();
  CHECK(defaults.size() > 40);
  for (const auto& [key, text] : defaults) {
    CAPTURE(key);
    CAPTURE(text);
    // As a user would write it: the reference shows {value} and host:port bare, YAML needs quotes.
    const bool needs_quotes = text.front() != '"' && text.find_first_of("{:") != std::string::npos;
    const Config set = load_config_text(yaml_with(key, needs_quotes ? '"' + text + '"' : text),
                                        "defaults.yaml", no_environment);
    CHECK(set == unset);
  }
}

TEST_CASE("config/relay.yaml loads and documents every declared key; minimal.yaml loads") {
  const std::string dir = std::string(RELAY_SOURCE_DIR) + "/config/";
  const Config example = load_config_file(dir + "relay.yaml", no_environment);
  CHECK(example.postgres.url == "postgresql://postgres@127.0.0.1:5432/outbox");
  load_config_file(dir + "minimal.yaml", no_environment);
  const std::string text = read_file(dir + "relay.yaml");
  for (const std::string& key : declared_keys()) {
    const std::string leaf = key.substr(key.rfind('.') + 1);
    CHECK_MESSAGE(text.find("  " + leaf + ":") != std::string::npos, key << " missing");
  }
}

TEST_CASE("a hostile configuration is refused at once: aliases, a huge text, a directory") {
  // Twelve levels of ten aliases each: 10^12 leaves if expanded. Refused at the first alias.
  std::string bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int level = 1; level <= 12; ++level) {
    bomb += "a" + std::to_string(level) + ": &a" + std::to_string(level) + " [";
    for (int i = 0; i < 10; ++i) bomb += (i ? ", *a" : "*a") + std::to_string(level - 1);
    bomb += "]\n";
  }
  CHECK_THROWS_WITH_AS(load_config_text(bomb, "bomb.yaml", no_environment),
                       "bomb.yaml:2: YAML aliases (*name) are not supported; write the value out",
                       ConfigError);
  const std::string huge = "# " + std::string(2 << 20, 'x') + "\n";
  CHECK_THROWS_WITH_AS(load_config_text(huge, "huge.yaml", no_environment),
                       doctest::Contains("a configuration is at most 1048576 bytes"), ConfigError);
  CHECK_THROWS_WITH_AS(load_config_file(std::string(RELAY_SOURCE_DIR) + "/config", no_environment),
                       doctest::Contains("is a directory"), ConfigError);
  CHECK_THROWS_WITH_AS(load_config_file("/dev/null", no_environment),
                       doctest::Contains("not a regular file"), ConfigError);
}
