// Topics made on purpose, for tests whose relay may not auto-create them (a missing topic must stay
// missing) or whose replicas must sit on chosen brokers (a partition that loses its in-sync
// replicas while the others keep theirs); and topics deleted when a run is over, so the shared
// broker holds only what runs now (a broker restarted after SIGKILL recovers every log it holds,
// and a fault scenario's restart must not wait for what earlier tests left).
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace outbox::test {

/// Creates `topic` with one partition per entry of `replicas` (each the broker ids holding that
/// partition, the first its preferred leader) and the topic `configs`, then waits until every
/// partition has a leader. Throws std::runtime_error with Kafka's error.
void create_topic(const std::string& bootstrap, const std::string& topic,
                  const std::vector<std::vector<int>>& replicas,
                  const std::map<std::string, std::string>& configs = {});

/// Creates `topic` with `partitions` partitions at the broker's replication factor and the topic
/// `configs`, then waits until every partition has a leader. A topic that exists is an error.
void create_topic(const std::string& bootstrap, const std::string& topic, int partitions,
                  const std::map<std::string, std::string>& configs = {});

/// Deletes every topic whose name contains one of `parts` and returns how many it asked to delete;
/// waits up to 30 s for the broker's answer. Throws std::runtime_error when it cannot.
int delete_topics_containing(const std::string& bootstrap, const std::vector<std::string>& parts);

/// The ids of the brokers in the cluster's metadata right now.
std::vector<int> broker_ids(const std::string& bootstrap);

}  // namespace outbox::test
