#include "relay/store/floor_rescanner.hpp"

#include <spdlog/spdlog.h>

#include <pqxx/pqxx>

#include "relay/core/text.hpp"
#include "relay/store/lazy_session.hpp"

namespace outbox {

namespace {
// As the lag gauges' reads (relay/maintenance/lag_monitor.cpp): a background read whose cost grows
// with what it steps over keeps to this share of the time.
constexpr double kRescanBusyShare = 0.05;
}  // namespace

FloorRescanner::FloorRescanner(const PostgresConfig& postgres, std::string sql,
                               std::chrono::milliseconds interval)
    : schedule_(interval, kRescanBusyShare),
      session_(std::make_unique<LazySession>(postgres,
                                             [sql = std::move(sql)](pqxx::connection& connection) {
                                               connection.prepare("rescan", sql);
                                             })),
      thread_([this] { run(); }) {}

FloorRescanner::~FloorRescanner() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

bool FloorRescanner::request(Request request) {
  {
    std::lock_guard lock(mutex_);
    if (stage_ != Stage::idle || !schedule_.due(PacedSchedule::Clock::now())) return false;
    request_ = std::move(request);
    stage_ = Stage::requested;
  }
  wake_.notify_all();
  return true;
}

std::optional<std::int64_t> FloorRescanner::take_found() {
  std::lock_guard lock(mutex_);
  if (stage_ != Stage::answered) return std::nullopt;
  stage_ = Stage::idle;
  return std::exchange(found_, std::nullopt);
}

void FloorRescanner::run() noexcept {
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || stage_ == Stage::requested; });
    if (stopping_) return;
    stage_ = Stage::looking;
    const Request request = request_;
    lock.unlock();
    const auto started = PacedSchedule::Clock::now();
    std::optional<std::int64_t> found;
    try {
      const pqxx::row row = session_->run("rescan below the claim floor", [&](pqxx::connection& c) {
        pqxx::nontransaction tx{c};
        return tx.exec_prepared1("rescan", request.lanes, request.floor, request.quarantined_ids,
                                 request.held_routes, request.quarantined_keys,
                                 request.hold_starts);
      });
      if (!row[0].is_null()) found = row[0].as<std::int64_t>();
    } catch (const std::exception& error) {
      // Unreachable PostgreSQL, or anything else: the claims go on from the floor they have, and
      // the next request looks again.
      store_log()->warn("event=claim_rescan_failed error=\"{}\"",
                        printable(error.what(), kReasonBytes));
    }
    if (found) {
      store_log()->info(
          "event=claim_floor_lowered id={} floor={} reason=\"a pending row below the "
          "floor: its id was written by hand or taken long before its commit\"",
          *found, request.floor);
    }
    const auto ended = PacedSchedule::Clock::now();
    lock.lock();
    schedule_.ran(started, ended);
    found_ = found;
    stage_ = Stage::answered;
  }
}

}  // namespace outbox
