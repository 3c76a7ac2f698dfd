// The integration tests' main: doctest's, and then the files the tests left under /tmp (relay
// configurations and logs) are removed when every test passed; a failed run keeps them.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "tests/support/services.hpp"

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int result = context.run();
  if (result == 0 && !context.shouldExit()) outbox::test::remove_kept_files();
  return result;
}
