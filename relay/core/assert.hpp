// Always-on invariant checks: a broken invariant aborts with file:line, whatever the build type.
// Exceptions are for the outside world (bad config, broken connections); this is for our own bugs.
#pragma once

#include <cstdio>
#include <cstdlib>

#define RELAY_ASSERT(condition, message)                                                         \
  do {                                                                                           \
    if (!(condition)) {                                                                          \
      std::fprintf(stderr, "%s:%d: invariant broken: %s (%s)\n", __FILE__, __LINE__, #condition, \
                   message);                                                                     \
      std::abort();                                                                              \
    }                                                                                            \
  } while (false)
