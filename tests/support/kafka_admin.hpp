// Topics made on purpose, for tests whose relay may not auto-create them (a missing topic must stay
// missing) or whose replicas must sit on chosen brokers (a partition that loses its in-sync
// replicas while the others keep theirs).
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

/// The ids of the brokers in the cluster's metadata right now.
std::vector<int> broker_ids(const std::string& bootstrap);

}  // namespace outbox::test
