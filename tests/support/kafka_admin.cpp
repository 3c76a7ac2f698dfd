#include "tests/support/kafka_admin.hpp"

#include <librdkafka/rdkafka.h>

#include <memory>
#include <stdexcept>
#include <thread>

namespace outbox::test {

namespace {

struct HandleDeleter {
  void operator()(rd_kafka_t* handle) const { rd_kafka_destroy(handle); }
};
using Handle = std::unique_ptr<rd_kafka_t, HandleDeleter>;

Handle make_handle(const std::string& bootstrap) {
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), error, sizeof error) !=
      RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    throw std::runtime_error(error);
  }
  rd_kafka_t* handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
  if (!handle) throw std::runtime_error(std::string("kafka admin: ") + error);
  return Handle(handle);
}

struct EventDeleter {
  void operator()(rd_kafka_event_t* event) const { rd_kafka_event_destroy(event); }
};
using Event = std::unique_ptr<rd_kafka_event_t, EventDeleter>;

/// An admin request's answer: `send` issues the request onto the queue it is given; waits up to
/// 30 s. The event is null and `failure` says why when there was no answer or a request-level
/// error; per-topic results are the caller's to read.
struct AdminAnswer {
  Event event;
  std::string failure;
};
template <typename Send>
AdminAnswer ask_admin(rd_kafka_t* handle, const std::string& request, Send send) {
  std::unique_ptr<rd_kafka_queue_t, decltype(&rd_kafka_queue_destroy)> queue(
      rd_kafka_queue_new(handle), &rd_kafka_queue_destroy);
  send(queue.get());
  AdminAnswer answer{Event(rd_kafka_queue_poll(queue.get(), 30000)), {}};
  if (!answer.event) {
    answer.failure = "no answer to " + request + " within 30 s";
  } else if (rd_kafka_event_error(answer.event.get())) {
    answer.failure = rd_kafka_event_error_string(answer.event.get());
    answer.event.reset();
  }
  return answer;
}

/// Whether every partition of `topic` has a leader, by the cluster's metadata.
bool has_leaders(rd_kafka_t* handle, const std::string& topic, std::size_t partitions) {
  rd_kafka_topic_t* topic_handle = rd_kafka_topic_new(handle, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* metadata = nullptr;
  const bool answered =
      rd_kafka_metadata(handle, 0, topic_handle, &metadata, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR;
  bool ready = false;
  if (answered && metadata->topic_cnt == 1 && metadata->topics[0].err == 0 &&
      static_cast<std::size_t>(metadata->topics[0].partition_cnt) == partitions) {
    ready = true;
    for (int i = 0; i < metadata->topics[0].partition_cnt; ++i) {
      if (metadata->topics[0].partitions[i].leader < 0) ready = false;
    }
  }
  if (metadata) rd_kafka_metadata_destroy(metadata);
  rd_kafka_topic_destroy(topic_handle);
  return ready;
}

}  // namespace

namespace {

/// Sends the CreateTopics request for `new_topic` (taking it), then waits for its leaders.
void create_and_wait(rd_kafka_t* handle, const std::string& topic, rd_kafka_NewTopic_t* new_topic,
                     const std::map<std::string, std::string>& configs, std::size_t partitions) {
  for (const auto& [name, value] : configs) {
    rd_kafka_NewTopic_set_config(new_topic, name.c_str(), value.c_str());
  }
  AdminAnswer answer = ask_admin(handle, "CreateTopics", [&](rd_kafka_queue_t* queue) {
    rd_kafka_CreateTopics(handle, &new_topic, 1, nullptr, queue);
  });
  std::string failure = std::move(answer.failure);
  if (answer.event) {
    std::size_t count = 0;
    const rd_kafka_topic_result_t** results = rd_kafka_CreateTopics_result_topics(
        rd_kafka_event_CreateTopics_result(answer.event.get()), &count);
    if (count == 1 && rd_kafka_topic_result_error(results[0]) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      failure = rd_kafka_topic_result_error_string(results[0]);
    }
  }
  rd_kafka_NewTopic_destroy(new_topic);
  if (!failure.empty()) throw std::runtime_error("creating topic " + topic + ": " + failure);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!has_leaders(handle, topic, partitions)) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("topic " + topic + " has no leader for every partition after 30 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

rd_kafka_NewTopic_t* new_topic_or_throw(const std::string& topic, int partitions) {
  char error[512];
  rd_kafka_NewTopic_t* new_topic =
      rd_kafka_NewTopic_new(topic.c_str(), partitions, -1, error, sizeof error);
  if (!new_topic) throw std::runtime_error(error);
  return new_topic;
}

}  // namespace

void create_topic(const std::string& bootstrap, const std::string& topic,
                  const std::vector<std::vector<int>>& replicas,
                  const std::map<std::string, std::string>& configs) {
  Handle handle = make_handle(bootstrap);
  rd_kafka_NewTopic_t* new_topic = new_topic_or_throw(topic, static_cast<int>(replicas.size()));
  char error[512];
  for (std::size_t partition = 0; partition < replicas.size(); ++partition) {
    std::vector<int32_t> brokers(replicas[partition].begin(), replicas[partition].end());
    if (rd_kafka_NewTopic_set_replica_assignment(new_topic, static_cast<int32_t>(partition),
                                                 brokers.data(), brokers.size(), error,
                                                 sizeof error) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_NewTopic_destroy(new_topic);
      throw std::runtime_error(error);
    }
  }
  create_and_wait(handle.get(), topic, new_topic, configs, replicas.size());
}

void create_topic(const std::string& bootstrap, const std::string& topic, int partitions,
                  const std::map<std::string, std::string>& configs) {
  Handle handle = make_handle(bootstrap);
  create_and_wait(handle.get(), topic, new_topic_or_throw(topic, partitions), configs,
                  static_cast<std::size_t>(partitions));
}

int delete_topics_containing(const std::string& bootstrap, const std::vector<std::string>& parts) {
  if (parts.empty()) return 0;
  Handle handle = make_handle(bootstrap);
  const rd_kafka_metadata_t* metadata = nullptr;
  const rd_kafka_resp_err_t listed = rd_kafka_metadata(handle.get(), 1, nullptr, &metadata, 10000);
  if (listed != RD_KAFKA_RESP_ERR_NO_ERROR) {
    throw std::runtime_error(std::string("listing topics: ") + rd_kafka_err2str(listed));
  }
  std::vector<rd_kafka_DeleteTopic_t*> doomed;
  for (int i = 0; i < metadata->topic_cnt; ++i) {
    const std::string name = metadata->topics[i].topic;
    for (const std::string& part : parts) {
      if (name.find(part) == std::string::npos) continue;
      doomed.push_back(rd_kafka_DeleteTopic_new(name.c_str()));
      break;
    }
  }
  rd_kafka_metadata_destroy(metadata);
  if (doomed.empty()) return 0;
  const std::string failure =
      ask_admin(handle.get(), "DeleteTopics", [&](rd_kafka_queue_t* queue) {
        rd_kafka_DeleteTopics(handle.get(), doomed.data(), doomed.size(), nullptr, queue);
      }).failure;
  rd_kafka_DeleteTopic_destroy_array(doomed.data(), doomed.size());
  const int count = static_cast<int>(doomed.size());
  if (!failure.empty()) throw std::runtime_error("deleting topics: " + failure);
  return count;
}

std::vector<int> broker_ids(const std::string& bootstrap) {
  Handle handle = make_handle(bootstrap);
  const rd_kafka_metadata_t* metadata = nullptr;
  std::vector<int> ids;
  if (rd_kafka_metadata(handle.get(), 0, nullptr, &metadata, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    for (int i = 0; i < metadata->broker_cnt; ++i) ids.push_back(metadata->brokers[i].id);
    rd_kafka_metadata_destroy(metadata);
  }
  return ids;
}

}  // namespace outbox::test
