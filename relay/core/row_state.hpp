// The states of an outbox row. The names are mirrored by the SQL enum outbox.row_state
// (schema/001_outbox.sql); tests/unit/core_test.cpp keeps the two in step. Which moves are
// allowed is the SQL's alone (the API functions and the relay's statements only move rows that
// are in the state they expect); tests/integration/checkback_e2etest.cpp checks them.
#pragma once

#include <array>
#include <optional>
#include <string_view>

namespace outbox {

enum class RowState {
  pending,      ///< committed, waiting to be published
  unknown,      ///< a half message: the writer has not decided yet (check-back resolves it)
  published,    ///< acknowledged by Kafka (terminal)
  rolled_back,  ///< the writer rolled it back; never published (terminal)
  dead,         ///< parked with a reason; an operator requeues or discards it
  discarded,    ///< a dead row an operator gave up on, with the reason (terminal)
};

inline constexpr std::array kAllRowStates{RowState::pending,   RowState::unknown,
                                          RowState::published, RowState::rolled_back,
                                          RowState::dead,      RowState::discarded};

std::string_view to_string(RowState state);
std::optional<RowState> parse_row_state(std::string_view text);

}  // namespace outbox
