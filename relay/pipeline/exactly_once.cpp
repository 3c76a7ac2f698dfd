#include "relay/pipeline/exactly_once.hpp"

#include <nlohmann/json.hpp>

namespace outbox {

std::string encode_marker(const TransactionMarker& marker) {
  nlohmann::json ids = nlohmann::json::array();
  for (OutboxId id : marker.ids) ids.push_back(id.value);
  return nlohmann::json{
      {"transactional_id", marker.transactional_id}, {"seq", marker.seq}, {"ids", std::move(ids)}}
      .dump();
}

std::optional<TransactionMarker> decode_marker(std::string_view text) {
  const nlohmann::json parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) return std::nullopt;
  const auto id = parsed.find("transactional_id");
  const auto seq = parsed.find("seq");
  const auto ids = parsed.find("ids");
  if (id == parsed.end() || !id->is_string() || seq == parsed.end() || !seq->is_number_integer() ||
      ids == parsed.end() || !ids->is_array()) {
    return std::nullopt;
  }
  TransactionMarker marker{id->get<std::string>(), seq->get<std::int64_t>(), {}};
  marker.ids.reserve(ids->size());
  for (const nlohmann::json& value : *ids) {
    if (!value.is_number_integer()) return std::nullopt;
    marker.ids.push_back(OutboxId{value.get<std::int64_t>()});
  }
  return marker;
}

std::string transactional_id_for(const std::string& prefix, const std::string& database_identity,
                                 const std::string& instance, int generation) {
  const std::string base = prefix == "auto" ? "outbox-relay." + database_identity : prefix;
  return base + "." + instance + "." + std::to_string(generation);
}

std::vector<OutboxId> ids_to_recover(const std::optional<std::string>& previous_id,
                                     std::int64_t committed_seq,
                                     const std::optional<TransactionMarker>& last_marker) {
  if (!previous_id || !last_marker) return {};
  if (last_marker->transactional_id != *previous_id) return {};
  if (last_marker->seq <= committed_seq) return {};
  return last_marker->ids;
}

}  // namespace outbox
