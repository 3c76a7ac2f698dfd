#include "relay/app/signals.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <ctime>

namespace outbox {

namespace {
sigset_t stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}
}  // namespace

StopOnSignals::StopOnSignals() {
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  waiter_ = std::jthread([this](std::stop_token own_stop) {
    const sigset_t watched = stop_signals();
    const timespec slice{0, 200'000'000};  // wake up to notice our own destruction
    while (!own_stop.stop_requested()) {
      const int signal_number = sigtimedwait(&watched, nullptr, &slice);
      if (signal_number == SIGINT || signal_number == SIGTERM) {
        spdlog::info("event=signal_received signal={} action=stop",
                     signal_number == SIGINT ? "SIGINT" : "SIGTERM");
        stop_.request_stop();
      }
    }
  });
}

StopOnSignals::~StopOnSignals() {
  waiter_.request_stop();
  waiter_.join();
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
}

}  // namespace outbox
