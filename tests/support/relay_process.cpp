#include "tests/support/relay_process.hpp"

#include <regex>

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <httplib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/support/services.hpp"

namespace outbox::test {

std::string write_relay_config(const std::string& database_url,
                               const std::map<std::string, std::string>& overrides) {
  std::map<std::string, std::map<std::string, std::string>> sections;
  sections["postgres"]["url"] = "\"" + database_url + "\"";
  sections["kafka"]["bootstrap_servers"] = "\"" + kafka_bootstrap() + "\"";
  sections["relay"]["poll_interval_ms"] = "200";
  sections["relay"]["lane_rebalance_interval_ms"] = "300";
  sections["relay"]["backoff_max_ms"] = "2000";
  sections["logging"]["level"] = "info";
  sections["metrics"]["listen"] = "\"127.0.0.1:0\"";  // tests run relays side by side
  for (const auto& [dotted, value] : overrides) {
    const auto dot = dotted.find('.');
    sections[dotted.substr(0, dot)][dotted.substr(dot + 1)] = value;
  }
  std::ostringstream yaml;
  for (const auto& [section, keys] : sections) {
    yaml << section << ":\n";
    for (const auto& [key, value] : keys) yaml << "  " << key << ": " << value << "\n";
  }
  const auto path = std::filesystem::temp_directory_path() / (unique_name("relay") + ".yaml");
  std::ofstream(path) << yaml.str();
  keep_until_run_passes(path.string());
  return path.string();
}

RelayProcess::RelayProcess(const std::string& config_path)
    : log_path_(config_path.substr(0, config_path.rfind('.')) + "." +
                std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) +
                ".log") {
  keep_until_run_passes(log_path_);
  pid_ = fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    const int log = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(log, STDOUT_FILENO);
    dup2(log, STDERR_FILENO);
    execl(RELAY_BINARY, RELAY_BINARY, "run", "--config", config_path.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
}

RelayProcess::~RelayProcess() {
  if (pid_ > 0) thaw();  // a frozen process cannot be reaped
  if (pid_ > 0) kill_hard();
}

bool RelayProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return false;
  }
  return true;
}

void RelayProcess::kill_hard() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void RelayProcess::freeze() {
  if (pid_ > 0) kill(pid_, SIGSTOP);
}

void RelayProcess::thaw() {
  if (pid_ > 0) kill(pid_, SIGCONT);
}

void RelayProcess::send_signal(int signal_number) {
  if (pid_ > 0) kill(pid_, signal_number);
}

int RelayProcess::terminate(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return exit_code_;
  kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill_hard();
  return -1;
}

int RelayProcess::metrics_port() const {
  int port = 0;
  eventually(
      [&] {
        const std::string log = log_tail(1'000'000);
        const auto at = log.find("event=metrics_listening");
        if (at == std::string::npos) return false;
        const auto port_at = log.find("port=", at);
        port = std::stoi(log.substr(port_at + 5));
        return true;
      },
      std::chrono::seconds(10));
  REQUIRE_MESSAGE(port > 0, "the relay did not report its metrics port:\n" << log_tail());
  return port;
}

std::string RelayProcess::metrics_text() const {
  httplib::Client client("127.0.0.1", metrics_port());
  client.set_read_timeout(5, 0);
  const auto response = client.Get("/metrics");
  return response && response->status == 200 ? response->body : std::string();
}

long RelayProcess::peak_rss_kb() const {
  std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

int RelayProcess::starts_logged() const {
  const std::string log = log_tail(std::string::npos);
  int starts = 0;
  for (auto at = log.find("event=starting"); at != std::string::npos;
       at = log.find("event=starting", at + 1)) {
    ++starts;
  }
  return starts;
}

CommandResult relay_command(const std::string& arguments) {
  const auto errors_path =
      std::filesystem::temp_directory_path() / (unique_name("relay-command") + ".stderr");
  const std::string command =
      std::string(RELAY_BINARY) + " " + arguments + " 2>'" + errors_path.string() + "'";
  CommandResult result;
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe)) result.output += buffer;
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream errors(errors_path);
  result.errors.assign(std::istreambuf_iterator<char>(errors), std::istreambuf_iterator<char>());
  std::filesystem::remove(errors_path);
  return result;
}

std::string RelayProcess::log_tail(std::size_t bytes) const {
  std::ifstream log(log_path_);
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  return text.size() > bytes ? text.substr(text.size() - bytes) : text;
}

double metric_value(const std::string& page, const std::string& series) {
  const std::regex line(
      "(^|\\n)" + std::regex_replace(series, std::regex(R"([{}"\\.+])"), R"(\$&)") + " ([^\\n]+)");
  std::smatch match;
  return std::regex_search(page, match, line) ? std::stod(match[2]) : -1;
}

}  // namespace outbox::test
