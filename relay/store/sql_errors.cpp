#include "relay/store/sql_errors.hpp"

namespace outbox {

SqlFailure classify_sqlstate(std::string_view sqlstate) {
  if (sqlstate.size() != 5) return SqlFailure::connection_lost;  // no server answer at all
  const std::string_view sqlclass = sqlstate.substr(0, 2);
  if (sqlclass == "08") return SqlFailure::connection_lost;  // connection exception
  if (sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03") {
    return SqlFailure::connection_lost;  // admin shutdown, crash shutdown, cannot connect now
  }
  if (sqlstate == "57014") return SqlFailure::transient;  // query canceled (statement_timeout)
  if (sqlstate == "55P03") return SqlFailure::transient;  // lock not available
  if (sqlclass == "40") return SqlFailure::transient;     // transaction rollback
  if (sqlclass == "53") return SqlFailure::transient;     // insufficient resources
  if (sqlclass == "58") return SqlFailure::transient;     // system error (I/O)
  return SqlFailure::permanent;
}

}  // namespace outbox
