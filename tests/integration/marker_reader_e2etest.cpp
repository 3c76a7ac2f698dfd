// Specifications of the marker topic's reader (relay/publisher/publisher.hpp, read_last_committed)
// against the real broker: a lane's new owner finds the fenced producer's last committed marker
// among every producer's markers in the one marker partition, or it would publish rows twice.
#include <doctest/doctest.h>
#include <librdkafka/rdkafkacpp.h>

#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>

#include "relay/publisher/publisher.hpp"
#include "tests/support/services.hpp"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

KafkaConfig kafka() {
  KafkaConfig config;
  config.bootstrap_servers = kafka_bootstrap();
  return config;
}

/// A transactional producer of its own id, as another relay instance would have.
class TransactionalProducer {
 public:
  explicit TransactionalProducer(const std::string& transactional_id) {
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    std::string error;
    conf->set("bootstrap.servers", kafka_bootstrap(), error);
    conf->set("transactional.id", transactional_id, error);
    producer_.reset(RdKafka::Producer::create(conf.get(), error));
    if (!producer_) throw std::runtime_error(error);
    check(producer_->init_transactions(30000));
  }
  void begin() { check(producer_->begin_transaction()); }
  void produce(const std::string& topic, const std::string& key, const std::string& value) {
    const RdKafka::ErrorCode code = producer_->produce(
        topic, kMarkerPartition, RdKafka::Producer::RK_MSG_COPY, const_cast<char*>(value.data()),
        value.size(), key.data(), key.size(), 0, nullptr);
    if (code != RdKafka::ERR_NO_ERROR) throw std::runtime_error(RdKafka::err2str(code));
    producer_->flush(30000);  // in the log, so an open transaction holds the last stable offset
  }
  void commit() { check(producer_->commit_transaction(30000)); }
  void abort() { check(producer_->abort_transaction(30000)); }

 private:
  static void check(RdKafka::Error* raw) {
    std::unique_ptr<RdKafka::Error> error(raw);
    if (error) throw std::runtime_error(error->str());
  }
  std::unique_ptr<RdKafka::Producer> producer_;
};

}  // namespace

TEST_CASE("the marker reader finds a producer's last committed marker among everyone's") {
  REQUIRE_SERVICES();
  const std::string topic = unique_name("markers");
  ensure_marker_topic(kafka(), topic, 30s);
  const std::string fenced = unique_name("fenced");
  TransactionalProducer previous(fenced);
  TransactionalProducer other(unique_name("other"));

  previous.begin();
  previous.produce(topic, fenced, "first");
  previous.commit();
  previous.begin();
  previous.produce(topic, fenced, "last committed");
  previous.commit();
  previous.begin();
  previous.produce(topic, fenced, "aborted");
  previous.abort();
  // More of another producer's markers after it than the reader's first look back covers.
  other.begin();
  for (int i = 0; i < 600; ++i) other.produce(topic, "someone else", std::to_string(i));
  other.commit();

  const auto found = read_last_committed(kafka(), topic, {fenced, "never wrote"}, 30s);
  CHECK(found.size() == 1);
  CHECK(found.at(fenced) == "last committed");
  CHECK(read_last_committed(kafka(), topic, {}, 30s).empty());
}

TEST_CASE(
    "the marker reader reads up to the end it saw, past another producer's open transaction") {
  REQUIRE_SERVICES();
  const std::string topic = unique_name("markers");
  ensure_marker_topic(kafka(), topic, 30s);
  const std::string fenced = unique_name("fenced");
  TransactionalProducer live(unique_name("live"));
  TransactionalProducer previous(fenced);

  // A live instance's transaction begins first and is still open when the fenced producer's
  // last marker, committed after it, is looked for: a read_committed consumer reaches the end of
  // the partition at the open transaction's first offset, short of that marker.
  live.begin();
  live.produce(topic, "live", "open");
  previous.begin();
  previous.produce(topic, fenced, "last committed");
  previous.commit();

  auto reading = std::async(std::launch::async,
                            [&] { return read_last_committed(kafka(), topic, {fenced}, 30s); });
  // The reader waits for what lies beyond the last stable offset instead of answering without it.
  CHECK(reading.wait_for(2s) == std::future_status::timeout);
  live.commit();
  const auto found = reading.get();
  CHECK(found.size() == 1);
  CHECK(found.at(fenced) == "last committed");
}
