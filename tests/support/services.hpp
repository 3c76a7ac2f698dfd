// Where the integration tests find PostgreSQL and Kafka, and what they do when those are absent.
#pragma once

#include <string>

namespace outbox::test {

/// postgresql://postgres@127.0.0.1:5432 unless RELAY_TEST_POSTGRES_URL says otherwise (no db name).
std::string postgres_server_url();
/// 127.0.0.1:9092 unless RELAY_TEST_KAFKA_BOOTSTRAP says otherwise.
std::string kafka_bootstrap();

/// True when both services answer. When they do not: with RELAY_REQUIRE_SERVICES=1 (CI) the
/// calling test fails; otherwise it is reported as skipped. Use through REQUIRE_SERVICES().
bool services_available();

/// A name no other test (or earlier run) uses: prefix + pid + counter + time.
std::string unique_name(const std::string& prefix);

/// Runs scripts/services with `action` (kafka-stop, kafka-start, ...); fails the test on error.
void run_services_script(const std::string& action);

}  // namespace outbox::test

#define REQUIRE_SERVICES()                                                         \
  do {                                                                             \
    if (!::outbox::test::services_available()) {                                   \
      const char* required = std::getenv("RELAY_REQUIRE_SERVICES");                \
      REQUIRE_MESSAGE(!(required && std::string(required) == "1"),                 \
                      "PostgreSQL or Kafka is not running (scripts/services up)"); \
      MESSAGE("skipped: PostgreSQL or Kafka is not running");                      \
      return;                                                                      \
    }                                                                              \
  } while (false)
