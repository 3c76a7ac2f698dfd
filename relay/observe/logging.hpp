// Logging set-up: one named spdlog logger per module (store, publisher, pipeline, app), one line
// per event with key=value fields, or one JSON object per line when logging.format is json.
// Logs go to stderr; stdout is left to commands' own output.
#pragma once

#include "relay/config/config.hpp"

namespace outbox {

/// Creates the module loggers with the configured level and format. Call once at start-up, before
/// any module logs; calling again replaces them. Throws ConfigError for an unknown level.
void configure_logging(const LoggingConfig& logging);

}  // namespace outbox
