#include "relay/app/version.hpp"

#include <curl/curl.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <microhttpd.h>

#include <pqxx/version>

#include "git_revision.hpp"

namespace outbox {

std::string version_text() {
  const int pq = PQlibVersion();  // e.g. 150005 for 15.5
  return "outbox-relay " RELAY_VERSION " (git " RELAY_GIT_REVISION
         ")\n"
         "libpq " +
         std::to_string(pq / 10000) + "." + std::to_string(pq % 100) +
         "\nlibpqxx " PQXX_VERSION "\nlibrdkafka " + std::string(rd_kafka_version_str()) +
         "\nlibcurl " + curl_version_info(CURLVERSION_NOW)->version + "\nlibmicrohttpd " +
         MHD_get_version();
}

}  // namespace outbox
