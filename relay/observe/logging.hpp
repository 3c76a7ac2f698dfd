// Logging set-up: one named spdlog logger per module (store, publisher, pipeline, app), one line
// per event with key=value fields, or one JSON object per line when logging.format is json.
// Logs go to stderr; stdout is left to commands' own output.
#pragma once

#include <memory>

#include "relay/config/config.hpp"
#include "relay/core/redaction.hpp"

namespace outbox {

/// Creates the module loggers with the configured level and format. Call once at start-up, before
/// any module logs; calling again replaces them. Every line passes through `secrets` first, in
/// both formats, whichever library's text it carries.
void configure_logging(const LoggingConfig& logging, std::shared_ptr<const SecretRedactor> secrets =
                                                         std::make_shared<const SecretRedactor>());

}  // namespace outbox
