#include "relay/core/row_state.hpp"

namespace outbox {

std::string_view to_string(RowState state) {
  switch (state) {
    case RowState::pending:
      return "pending";
    case RowState::unknown:
      return "unknown";
    case RowState::published:
      return "published";
    case RowState::rolled_back:
      return "rolled_back";
    case RowState::dead:
      return "dead";
    case RowState::discarded:
      return "discarded";
  }
  return "invalid";
}

std::optional<RowState> parse_row_state(std::string_view text) {
  for (RowState state : kAllRowStates) {
    if (to_string(state) == text) return state;
  }
  return std::nullopt;
}

}  // namespace outbox
