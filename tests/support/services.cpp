#include "tests/support/services.hpp"

#include <doctest/doctest.h>
#include <librdkafka/rdkafkacpp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>

#include "tests/support/kafka_admin.hpp"
#include "tests/support/kafka_reader.hpp"

namespace outbox::test {

std::vector<ConsumedMessage> read_topic(const std::string& topic,
                                        std::chrono::milliseconds topic_timeout) {
  return read_topic(kafka_bootstrap(), topic, topic_timeout);
}

std::vector<ConsumedMessage> read_topic_to_end(const std::string& topic, bool committed,
                                               std::chrono::milliseconds topic_timeout) {
  return read_topic_to_end(kafka_bootstrap(), topic, committed, topic_timeout);
}

namespace {
std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? value : fallback;
}

bool kafka_answers() {
  std::string error;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  conf->set("bootstrap.servers", kafka_bootstrap(), error);
  std::unique_ptr<RdKafka::Producer> producer(RdKafka::Producer::create(conf.get(), error));
  if (!producer) return false;
  RdKafka::Metadata* metadata = nullptr;
  const bool answered = producer->metadata(true, nullptr, &metadata, 5000) == RdKafka::ERR_NO_ERROR;
  delete metadata;
  return answered;
}
}  // namespace

std::string postgres_server_url() {
  return env_or("RELAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432");
}

std::string kafka_bootstrap() { return env_or("RELAY_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:9092"); }

bool services_available() {
  static const bool available = [] {
    try {
      pqxx::connection connection{postgres_server_url() + "/postgres"};
    } catch (const std::exception&) {
      return false;
    }
    return kafka_answers();
  }();
  return available;
}

namespace {
// The test binary's, not the product's: one of each per run.
std::vector<std::string>& kept_files() {
  static std::vector<std::string> files;
  return files;
}
struct MadeNames {
  std::mutex mutex;  // tests name things from their own threads too
  std::vector<std::string> names;
};
MadeNames& made_names() {
  static MadeNames made;
  return made;
}
}  // namespace

std::string unique_name(const std::string& prefix) {
  static std::atomic<int> counter{0};
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  std::string name =
      prefix + "_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + "_" +
      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now).count() %
                     100000000);
  MadeNames& made = made_names();
  const std::lock_guard lock(made.mutex);
  made.names.push_back(name);
  return name;
}

void delete_topics_made_here() {
  MadeNames& made = made_names();
  const std::lock_guard lock(made.mutex);
  if (made.names.empty() || !services_available()) return;
  try {
    delete_topics_containing(kafka_bootstrap(), made.names);
  } catch (const std::exception& error) {
    // Only housekeeping: the run passed, and a later run's names are unique anyway.
    std::cerr << "integration tests: topics left on the broker: " << error.what() << "\n";
  }
  made.names.clear();
}

void keep_until_run_passes(const std::string& path) { kept_files().push_back(path); }

void remove_kept_files() {
  std::error_code ignored;
  for (const std::string& path : kept_files()) std::filesystem::remove(path, ignored);
  kept_files().clear();
}

bool services_are_faultable() {
  const std::string postgres = postgres_server_url();
  const bool local_postgres = postgres.find("@127.0.0.1:5432") != std::string::npos ||
                              postgres.find("@localhost:5432") != std::string::npos;
  return local_postgres && kafka_bootstrap() == "127.0.0.1:9092";
}

void run_services_script(const std::string& action) {
  REQUIRE_MESSAGE(services_are_faultable(),
                  "refusing to run scripts/services "
                      << action
                      << ": it acts on 127.0.0.1:5432 "
                         "and 127.0.0.1:9092, not on the services under test");
  const std::string command = std::string(RELAY_SOURCE_DIR) + "/scripts/services " + action;
  REQUIRE_MESSAGE(std::system(command.c_str()) == 0, "failed: " << command);
}

}  // namespace outbox::test
