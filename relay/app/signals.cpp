#include "relay/app/signals.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

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
    pthread_setname_np(pthread_self(), "signals");
    const sigset_t watched = stop_signals();
    // Blocks until a signal comes: the destructor sends this thread one to end it, so it never
    // wakes up just to look.
    while (true) {
      const int signal_number = sigwaitinfo(&watched, nullptr);
      if (own_stop.stop_requested()) return;
      if (signal_number != SIGINT && signal_number != SIGTERM) continue;  // EINTR
      const char* name = signal_number == SIGINT ? "SIGINT" : "SIGTERM";
      if (stop_.stop_requested()) {
        // A second signal: the operator will not wait for the clean stop. Nothing is lost (what
        // is not recorded is published again), so leave now, as a shell's second ^C does.
        spdlog::warn("event=signal_received signal={} action=exit_now", name);
        spdlog::shutdown();
        std::_Exit(128 + signal_number);
      }
      spdlog::info(
          "event=signal_received signal={} action=stop effect=\"a second signal exits at "
          "once\"",
          name);
      stop_.request_stop();
    }
  });
}

StopOnSignals::~StopOnSignals() {
  waiter_.request_stop();
  pthread_kill(waiter_.native_handle(), SIGTERM);  // blocked everywhere: taken by its sigwaitinfo
  waiter_.join();
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
}

}  // namespace outbox
