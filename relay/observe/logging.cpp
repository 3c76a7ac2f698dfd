#include "relay/observe/logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <array>
#include <cstdio>

#include "relay/core/text.hpp"

namespace outbox {

namespace {
constexpr std::array kModuleLoggers{"app",      "store",     "publisher",
                                    "pipeline", "checkback", "observe"};

/// The message's text with the known secrets cut out: what both formats below start from.
class RedactingFlag : public spdlog::custom_flag_formatter {
 public:
  explicit RedactingFlag(std::shared_ptr<const SecretRedactor> secrets)
      : secrets_(std::move(secrets)) {}

 protected:
  std::string redacted(const spdlog::details::log_msg& message) const {
    return secrets_->redact(std::string_view(message.payload.data(), message.payload.size()));
  }
  std::shared_ptr<const SecretRedactor> secrets_;
};

/// %j: the message as the inside of a JSON string (quotes, backslashes, control bytes escaped).
class JsonEscapedMessage final : public RedactingFlag {
 public:
  using RedactingFlag::RedactingFlag;
  void format(const spdlog::details::log_msg& message, const std::tm&,
              spdlog::memory_buf_t& out) override {
    for (char c : redacted(message)) {
      switch (c) {
        case '"':
          out.append(std::string_view("\\\""));
          break;
        case '\\':
          out.append(std::string_view("\\\\"));
          break;
        case '\n':
          out.append(std::string_view("\\n"));
          break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
            out.append(std::string_view(escaped));
          } else {
            out.push_back(c);
          }
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscapedMessage>(secrets_);
  }
};

/// %E: the message with control bytes escaped and its length capped (relay/core/text.hpp), so
/// bytes a writer controls (a topic with a newline, a megabyte of key) can neither forge a line of
/// the text log nor flood it. Messages quote such values already; this is the last line of defence.
class PrintableMessage final : public RedactingFlag {
 public:
  using RedactingFlag::RedactingFlag;
  void format(const spdlog::details::log_msg& message, const std::tm&,
              spdlog::memory_buf_t& out) override {
    const std::string text = printable(redacted(message), kMaxBytes);
    out.append(std::string_view(text));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<PrintableMessage>(secrets_);
  }

 private:
  static constexpr std::size_t kMaxBytes = 16384;
};
}  // namespace

void configure_logging(const LoggingConfig& logging,
                       std::shared_ptr<const SecretRedactor> secrets) {
  const spdlog::level::level_enum level = spdlog::level::from_str(logging.level);
  // from_str maps anything it does not know to "off"; the config layer only lets valid names in.
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  for (const char* name : kModuleLoggers) {
    spdlog::drop(name);
    auto logger = std::make_shared<spdlog::logger>(name, sink);
    logger->set_level(level);
    if (logging.format == LogFormat::json) {
      // Messages are key=value text; JSON mode wraps them so log shippers get one object a line.
      auto formatter = std::make_unique<spdlog::pattern_formatter>();
      formatter->add_flag<JsonEscapedMessage>('j', secrets)
          .set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","logger":"%n","msg":"%j"})");
      logger->set_formatter(std::move(formatter));
    } else {
      auto formatter = std::make_unique<spdlog::pattern_formatter>();
      formatter->add_flag<PrintableMessage>('E', secrets)
          .set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %n %E");
      logger->set_formatter(std::move(formatter));
    }
    spdlog::register_logger(logger);
  }
  spdlog::set_default_logger(spdlog::get("app"));
}

}  // namespace outbox
