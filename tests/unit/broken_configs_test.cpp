// Every file under tests/config/broken/ is a configuration a user could plausibly write wrong. Its
// first line states the error the loader must give, as `# error: FILE:LINE: KEY: WHY`; the
// loader's message is compared with it word for word, so a message that stops naming the file,
// the line or the key fails here. (scripts/test runs the same files through the CLI.)
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "relay/config/config.hpp"

using namespace outbox;

namespace {

bool no_environment(const std::string&, std::string&) { return false; }

std::string expected_error(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string first_line;
  std::getline(in, first_line);
  const std::string marker = "# error: ";
  REQUIRE_MESSAGE(first_line.starts_with(marker),
                  file << " does not start with '" << marker << "'");
  return first_line.substr(marker.size());
}

}  // namespace

TEST_CASE("each broken configuration file is refused with the error its first line states") {
  const std::filesystem::path directory = RELAY_SOURCE_DIR "/tests/config/broken";
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(directory)) {
    if (entry.path().extension() == ".yaml") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 20);
  for (const auto& file : files) {
    CAPTURE(file);
    const std::string expected = (directory / expected_error(file)).string();
    try {
      load_config_file(file.string(), no_environment);
      FAIL("loaded without an error");
    } catch (const ConfigError& error) {
      CHECK(std::string(error.what()) == expected);
    }
  }
}
