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

/// A name no other test (or earlier run) uses: prefix + pid + counter + time. Remembered, so the
/// topics named with it can be deleted when the run is over.
std::string unique_name(const std::string& prefix);

/// Whether the services under test are the ones scripts/services manages (PostgreSQL on
/// 127.0.0.1:5432, the broker on 127.0.0.1:9092): only those can be faulted. With
/// RELAY_TEST_POSTGRES_URL or RELAY_TEST_KAFKA_BOOTSTRAP pointing elsewhere, a fault would stop
/// someone else's service and leave the one under test alone. Use through
/// REQUIRE_FAULTABLE_SERVICES().
bool services_are_faultable();

/// Remembers a file a test wrote under /tmp (a relay's config, its log), for removal when the
/// whole run passed; a failed run keeps them to be read.
void keep_until_run_passes(const std::string& path);
/// Removes what keep_until_run_passes() remembered; the integration tests' main calls it.
void remove_kept_files();
/// Deletes the topics whose names hold a unique_name() of this process (the integration tests'
/// main calls it when the run passed): a broker restarted after SIGKILL recovers every log it
/// holds, and the fault scenarios that restart it must not wait for what earlier tests left.
void delete_topics_made_here();

/// Runs scripts/services with `action` (kafka-stop, kafka-start, ...); fails the test on error,
/// and refuses when the services under test are not scripts/services' own.
void run_services_script(const std::string& action);

}  // namespace outbox::test

/// What ctest's SKIP_REGULAR_EXPRESSION (tests/CMakeLists.txt) reports as a skip, never a pass.
#define RELAY_TEST_SKIP_MARK "outbox-relay test skipped: "

#define REQUIRE_SERVICES()                                                         \
  do {                                                                             \
    if (!::outbox::test::services_available()) {                                   \
      const char* required = std::getenv("RELAY_REQUIRE_SERVICES");                \
      REQUIRE_MESSAGE(!(required && std::string(required) == "1"),                 \
                      "PostgreSQL or Kafka is not running (scripts/services up)"); \
      MESSAGE(RELAY_TEST_SKIP_MARK "PostgreSQL or Kafka is not running");          \
      return;                                                                      \
    }                                                                              \
  } while (false)

/// For tests that stop, pause or restart a service: skipped when they could not fault the one
/// under test (see services_are_faultable).
#define REQUIRE_FAULTABLE_SERVICES()                                             \
  do {                                                                           \
    REQUIRE_SERVICES();                                                          \
    if (!::outbox::test::services_are_faultable()) {                             \
      MESSAGE(RELAY_TEST_SKIP_MARK                                               \
              "the services under test are not scripts/services' own "           \
              "(127.0.0.1:5432 and 127.0.0.1:9092), so they cannot be faulted"); \
      return;                                                                    \
    }                                                                            \
  } while (false)
