// Writer-controlled bytes (topic names, keys, headers, error texts that quote them) are data, never
// format: before they reach a log line, a metric label or a stored reason they pass through here.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace outbox {

/// `text` with every control byte (below 0x20, and 0x7f) written as \n, \r, \t or \xNN, so a
/// newline in a topic can never forge a log line; then cut to at most `max_bytes` bytes (never
/// inside an escape), ending in "...(N bytes cut)" when cut. Bytes of 0x80 and above pass
/// unchanged: UTF-8 stays readable. A backslash is left as it is, so escaping twice changes
/// nothing more (a reason escaped when stored is logged as it reads); a writer who stores the two
/// characters \n gets them shown as such, which is ambiguous to read but cannot forge a line.
std::string printable(std::string_view text, std::size_t max_bytes = 1024);

/// `text` cut to at most `max_bytes` bytes, with a marker saying how much was cut; no escaping.
/// For values that are stored (a row's last_error), where the bytes themselves are not a hazard
/// but their size is.
std::string capped(std::string_view text, std::size_t max_bytes);

}  // namespace outbox
