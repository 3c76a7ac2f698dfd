// Specification of the log's last line of defence: whatever text a module logs, in either format,
// the configured secrets are cut out and control bytes escaped before it reaches stderr.
#include <doctest/doctest.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "relay/observe/logging.hpp"

using namespace outbox;

namespace {

/// Everything written to stderr while `body` runs.
template <typename Body>
std::string stderr_of(Body body) {
  std::fflush(stderr);
  const int saved = dup(STDERR_FILENO);
  char path[] = "/tmp/outbox-relay-log-XXXXXX";
  const int file = mkstemp(path);
  REQUIRE(file >= 0);
  dup2(file, STDERR_FILENO);
  body();
  std::fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(file);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::remove(path);
  return text.str();
}

}  // namespace

TEST_CASE("every log line, text or JSON, has the configured secrets cut out") {
  for (const LogFormat format : {LogFormat::text, LogFormat::json}) {
    LoggingConfig logging;
    logging.level = "trace";
    logging.format = format;
    const std::string written = stderr_of([&] {
      configure_logging(logging, std::make_shared<const SecretRedactor>(
                                     std::vector<std::string>{"s3cr%zzet", "Bearer-tok"}));
      const auto store = spdlog::get("store");
      const auto checkback = spdlog::get("checkback");
      if (!store || !checkback) return;  // checked below: nothing written
      // As libpq and libcurl word their errors: the secret quoted inside someone else's text.
      store->error("event=x error=\"invalid percent-encoded token: \"s3cr%zzet\"\"");
      checkback->trace("auth Bearer-tok\nevent=forged");
    });
    CAPTURE(written);
    CHECK(written.find("s3cr") == std::string::npos);
    CHECK(written.find("Bearer-tok") == std::string::npos);
    CHECK(written.find("***") != std::string::npos);
    CHECK(written.find("\nevent=forged") == std::string::npos);
  }
  configure_logging(LoggingConfig{});
}
