// The integration tests' main: doctest's, and then the files the tests left under /tmp (relay
// configurations and logs) and the topics they made are removed when every test passed; a failed
// run keeps them to be read.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "tests/support/services.hpp"

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int result = context.run();
  if (result == 0 && !context.shouldExit()) {
    outbox::test::remove_kept_files();
    outbox::test::delete_topics_made_here();
  }
  return result;
}
