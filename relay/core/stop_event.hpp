// A file descriptor that becomes readable when a stop is requested, so a thread can block in
// poll() on its own sockets and still notice a stop at once: an idle relay then sleeps until its
// next deadline instead of waking every few hundred milliseconds to look.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <stop_token>

namespace outbox {

class StopEvent {
 public:
  explicit StopEvent(std::stop_token stop) : fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (fd_ < 0) throw std::runtime_error("eventfd failed");
    // Runs at once when the stop was already requested.
    on_stop_.emplace(stop, [fd = fd_] {
      const std::uint64_t one = 1;
      [[maybe_unused]] const auto written = write(fd, &one, sizeof one);
    });
  }
  ~StopEvent() {
    on_stop_.reset();  // first: the callback must not write to a closed descriptor
    close(fd_);
  }
  StopEvent(const StopEvent&) = delete;
  StopEvent& operator=(const StopEvent&) = delete;

  /// Readable (POLLIN) from the moment a stop is requested; it stays readable.
  int fd() const { return fd_; }

 private:
  int fd_;
  std::optional<std::stop_callback<std::function<void()>>> on_stop_;
};

}  // namespace outbox
