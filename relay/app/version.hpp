// What `outbox-relay --version` prints: the relay's version and git revision, and the versions of
// the libraries it runs with (those it was linked against, as loaded at run time), which is what a
// bug report needs.
#pragma once

#include <string>

namespace outbox {

std::string version_text();

}  // namespace outbox
