// fault-checker: writes events through the SQL API from concurrent writers while faults are
// injected around it (scripts/faults), then, once the faults have stopped, waits for the relay to
// drain and reads everything back from Kafka and the database. It counts lost events (committed,
// never in Kafka), unexpected ones (rolled back or never written, yet in Kafka), duplicates, keys
// out of order (by first occurrence), stuck rows (not terminal after the drain) and misparked
// rows (malformed or never decided, yet not dead with a reason), prints the counts and exits 1 on
// any lost, unexpected, out-of-order, stuck or misparked event. With --read-committed (the
// relay's kafka.exactly_once) it reads as a read_committed consumer and any duplicate fails too.
//
// Each key belongs to one writer, which commits its events one after another, so the order of a
// key's commits is its sequence 1, 2, 3, ... Some transactions roll back; some are held open for
// seconds before committing (late committers, older ids than rows already published). A commit
// whose outcome is in doubt (the connection died during COMMIT) is resolved by looking the event
// up in the database once it answers again.
//
// With --half-percent, events also go through outbox.prepare and a later outbox.commit or
// outbox.rollback, and the checker serves the status-check endpoint, answering from the writers'
// decisions. Some writers "crash" after deciding (the row is left unknown for the sweeper), a few
// never decide (the row must end dead, check-back exhausted), and --endpoint-fault-percent of the
// answers are failures (HTTP 500, garbage, a hang past the relay's timeout, an unknown status, a
// redirect, an oversized body) that each carry the wrong verdict: a relay that trusted one would
// publish a rolled-back event or lose a committed one. With --malformed-percent, rows with a null
// or invalid topic, a non-string header or an oversized payload are mixed in; each must end dead
// with its reason.
#include <httplib.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <random>
#include <set>
#include <thread>

#include "tests/support/kafka_admin.hpp"
#include "tests/support/kafka_reader.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Options {
  std::string database_url;
  std::string kafka = "127.0.0.1:9092";
  std::string topic;
  int seconds = 30;
  int writers = 8;
  int keys = 200;
  int rollback_percent = 10;
  int late_percent = 1;
  int late_seconds = 3;
  int rate = 0;  ///< transactions per second, all writers together (0: as fast as they go)
  int drain_timeout_seconds = 180;
  int half_percent = 0;            ///< events written as half messages
  int crash_percent = 20;          ///< of half messages: the writer dies after deciding
  int abandon_percent = 2;         ///< of half messages: nobody ever decides
  int slow_decide_ms = 0;          ///< some half messages are decided this late (checks race them)
  int endpoint_fault_percent = 0;  ///< status-check answers that are failures
  int endpoint_hang_ms = 1000;     ///< how long a hanging answer takes
  int status_port = 0;             ///< where the status-check endpoint listens (0: not served)
  int malformed_percent = 0;       ///< transactions that insert a malformed row
  bool poison = false;             ///< malformed rows of every kind a hostile writer can make
  int max_lag_ms = 0;              ///< fail when the p99 insert-to-published of good rows is over
  int max_lag_max_ms = 0;          ///< fail when the slowest good row took longer (a takeover)
  bool allow_stale = false;        ///< count stale copies without failing on them
  bool read_committed = false;     ///< read as isolation.level=read_committed; any duplicate fails
  std::vector<std::string> delete_after;  ///< topics deleted once the check passed
};

constexpr const char* kProducerGroup = "faults";

enum class Outcome {
  committed,
  rolled_back,
  must_be_dead,  ///< malformed, or a half message nobody decided: dead with a reason, never sent
};

struct Event {
  std::string key;
  int sequence = 0;
  Outcome outcome = Outcome::rolled_back;
  std::string reason;  ///< must_be_dead: part of the last_error the dead row must carry
};

/// Every event any writer attempted, by id.
class Ledger {
 public:
  void record(const std::string& id, Event event) {
    std::lock_guard lock(mutex_);
    events_[id] = std::move(event);
  }
  std::map<std::string, Event> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Event> events_;
};

/// What writers decided about their half messages, by transaction id: what the status-check
/// endpoint answers from, as an application answers from its business tables.
class Decisions {
 public:
  void decide(const std::string& transaction_id, Outcome outcome) {
    std::lock_guard lock(mutex_);
    decided_[transaction_id] = outcome;
  }
  std::optional<Outcome> find(const std::string& transaction_id) const {
    std::lock_guard lock(mutex_);
    const auto found = decided_.find(transaction_id);
    return found == decided_.end() ? std::nullopt : std::optional(found->second);
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Outcome> decided_;
};

struct WriterCounts {
  std::atomic<long> committed{0}, rolled_back{0}, late{0}, in_doubt{0}, connection_errors{0};
  std::atomic<long> half{0}, crashed{0}, abandoned{0}, malformed{0};
};

struct EndpointCounts {
  std::atomic<long> checks{0}, faults{0};
};

/// Connects, retrying while the database is down (a fault may be restarting it).
std::unique_ptr<pqxx::connection> connect(const std::string& url, WriterCounts& counts) {
  for (;;) {
    try {
      return std::make_unique<pqxx::connection>(url);
    } catch (const pqxx::broken_connection&) {
      ++counts.connection_errors;
      std::this_thread::sleep_for(200ms);
    }
  }
}

/// Whether the event's row exists (in any table state), asked once the database answers again.
bool event_was_committed(const std::string& url, const std::string& id, WriterCounts& counts) {
  for (;;) {
    try {
      auto connection = connect(url, counts);
      pqxx::nontransaction tx{*connection};
      return tx.exec_params1("SELECT count(*) FROM outbox.messages WHERE headers->>'event-id' = $1",
                             id)[0]
                 .as<long>() > 0;
    } catch (const pqxx::broken_connection&) {
      ++counts.connection_errors;
      std::this_thread::sleep_for(200ms);
    }
  }
}

/// One writer: its keys, its connection, and the events it writes until the deadline.
class Writer {
 public:
  Writer(const Options& options, int writer, Ledger& ledger, Decisions& decisions,
         WriterCounts& counts)
      : options_(options),
        writer_(writer),
        ledger_(ledger),
        decisions_(decisions),
        counts_(counts),
        random_(static_cast<unsigned>(writer) * 7919u + 17u) {
    for (int key = writer; key < options.keys; key += options.writers) {
      keys_.push_back("k" + std::to_string(key));
    }
    half_key_generation_.resize(kHalfKeySlots, 0);
  }

  void run() {
    connection_ = connect(options_.database_url, counts_);
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::seconds(options_.seconds);
    for (long n = 0; Clock::now() < deadline; ++n) {
      if (options_.rate > 0) {
        // Paced: transaction n of this writer starts no earlier than its share of the rate allows.
        std::this_thread::sleep_until(
            start + std::chrono::microseconds(n * 1'000'000LL * options_.writers / options_.rate));
      }
      const std::string id = "w" + std::to_string(writer_) + "-" + std::to_string(n);
      if (chance(options_.malformed_percent)) {
        write_malformed(id, n);
      } else if (chance(options_.half_percent)) {
        write_half_message(id);
      } else {
        write_plain(id);
      }
    }
  }

 private:
  static constexpr int kHalfKeySlots = 5;

  bool chance(int percent) { return percent_(random_) <= percent; }

  std::string payload_of(const std::string& id, const std::string& key, int sequence) const {
    return nlohmann::json{{"event", id}, {"key", key}, {"seq", sequence}}.dump();
  }

  void settle(const std::string& id, const std::string& key, int sequence, Outcome outcome) {
    ledger_.record(id, {key, sequence, outcome, ""});
    if (outcome == Outcome::committed) {
      next_sequence_[key] = sequence;
      ++counts_.committed;
    } else if (outcome == Outcome::rolled_back) {
      ++counts_.rolled_back;
    }
  }

  /// After the connection died mid-transaction: before COMMIT the transaction is gone; during
  /// COMMIT nobody knows until the database answers again.
  bool recover(bool committing, const std::string& id) {
    ++counts_.connection_errors;
    bool committed = false;
    if (committing) {
      ++counts_.in_doubt;
      committed = event_was_committed(options_.database_url, id, counts_);
    }
    connection_ = connect(options_.database_url, counts_);
    return committed;
  }

  void write_plain(const std::string& id) {
    const std::string& key = keys_[random_() % keys_.size()];
    const int sequence = next_sequence_[key] + 1;
    const bool roll_back = chance(options_.rollback_percent);
    const bool late = !roll_back && chance(options_.late_percent);
    bool committing = false;
    try {
      pqxx::work tx{*connection_};
      tx.exec_params("SELECT outbox.publish($1, $2, $3::jsonb, $4::jsonb)", options_.topic, key,
                     payload_of(id, key, sequence), nlohmann::json{{"event-id", id}}.dump());
      if (late) {
        ++counts_.late;
        std::this_thread::sleep_for(std::chrono::seconds(options_.late_seconds));
      }
      if (roll_back) {
        tx.abort();
        settle(id, key, sequence, Outcome::rolled_back);
        return;
      }
      committing = true;
      tx.commit();
      settle(id, key, sequence, Outcome::committed);
    } catch (const std::exception&) {
      settle(id, key, sequence,
             recover(committing, id) ? Outcome::committed : Outcome::rolled_back);
    }
  }

  /// prepare -> decide -> commit or rollback, as a RocketMQ transactional producer does. Half
  /// messages have keys of their own; a key whose row is left to the sweeper is retired, since
  /// the row becomes visible only when the sweeper decides and a later event could overtake it.
  void write_half_message(const std::string& id) {
    ++counts_.half;
    const int slot = static_cast<int>(random_() % kHalfKeySlots);
    const std::string key = "h" + std::to_string(writer_) + "-" + std::to_string(slot) + "." +
                            std::to_string(half_key_generation_[slot]);
    auto retire_key = [&] { ++half_key_generation_[slot]; };
    const int sequence = next_sequence_[key] + 1;
    bool committing = false;
    try {
      pqxx::work tx{*connection_};
      tx.exec_params("SELECT outbox.prepare($1, $2, $3::jsonb, $4::jsonb, $5, $6)", options_.topic,
                     key, payload_of(id, key, sequence), nlohmann::json{{"event-id", id}}.dump(),
                     kProducerGroup, id);
      committing = true;
      tx.commit();
    } catch (const std::exception&) {
      if (!recover(committing, id)) {
        settle(id, key, sequence, Outcome::rolled_back);  // never written
        return;
      }
      retire_key();  // the half message exists; the decision below reaches it through a check
      decide_without_telling(id, key, sequence);
      return;
    }
    if (chance(options_.abandon_percent)) {
      // Nobody will ever know: every check answers UNKNOWN until the row is parked dead.
      ++counts_.abandoned;
      ledger_.record(id, {key, sequence, Outcome::must_be_dead, "check-back exhausted"});
      retire_key();
      return;
    }
    if (options_.slow_decide_ms > 0 && chance(10)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(options_.slow_decide_ms));
    }
    if (chance(options_.crash_percent)) {
      // The business transaction finished, then the writer died before telling the outbox.
      ++counts_.crashed;
      retire_key();
      decide_without_telling(id, key, sequence);
      connection_ = connect(options_.database_url, counts_);
      return;
    }
    const Outcome outcome = decide(id);
    try {
      pqxx::work tx{*connection_};
      tx.exec_params(outcome == Outcome::committed ? "SELECT outbox.commit($1, $2)"
                                                   : "SELECT outbox.rollback($1, $2)",
                     kProducerGroup, id);
      tx.commit();
    } catch (const std::exception&) {
      recover(false, id);
      retire_key();  // whether or not it took, the sweeper's check agrees with the decision
    }
    settle(id, key, sequence, outcome);
  }

  /// The business outcome of a half message, where the status-check endpoint will find it.
  Outcome decide(const std::string& id) {
    const Outcome outcome =
        chance(options_.rollback_percent) ? Outcome::rolled_back : Outcome::committed;
    decisions_.decide(id, outcome);
    return outcome;
  }

  void decide_without_telling(const std::string& id, const std::string& key, int sequence) {
    settle(id, key, sequence, decide(id));
  }

  /// A row the relay must park dead with its reason. Each has a key of its own, so its dead row
  /// holds back nothing else.
  void write_malformed(const std::string& id, long n) {
    const std::string key = "bad-" + id;
    nlohmann::json payload{{"event", id}};
    nlohmann::json headers{{"event-id", id}};
    std::optional<std::string> topic = options_.topic;
    std::string reason;
    std::optional<std::string> created_at;
    std::string key_used = key;
    if (options_.poison) {
      // Each kind once stopped every key, or the whole relay, in an earlier version.
      switch (n % 8) {
        case 0:
          topic.reset();
          key_used = key + std::string(5000, 'k');  // past a btree entry's size
          reason = "null";
          break;
        case 1:
          topic = "evil\nevent=forged_line";
          reason = "character";
          break;
        case 2:
          topic = std::string(100'000, 't');
          reason = "longer than 249";
          break;
        case 3:
          headers["outbox-id"] = "1";
          reason = "row-id header";
          break;
        case 4:
          created_at = "infinity";  // refused at insert: the writer's transaction fails
          break;
        default:
          break;
      }
    }
    if (created_at) {
      try {
        pqxx::work tx{*connection_};
        tx.exec_params(
            "INSERT INTO outbox.messages (topic, message_key, payload, headers, created_at)"
            " VALUES ($1, $2, convert_to($3, 'UTF8'), $4::jsonb, $5::timestamptz)",
            topic, key_used, payload.dump(), headers.dump(), *created_at);
        tx.commit();
        ledger_.record(id, {key_used, 0, Outcome::committed, ""});  // a refusal was expected
      } catch (const pqxx::check_violation&) {
        ledger_.record(id, {key_used, 0, Outcome::rolled_back, ""});
      } catch (const std::exception&) {
        recover(false, id);
        ledger_.record(id, {key_used, 0, Outcome::rolled_back, ""});
      }
      ++counts_.malformed;
      return;
    }
    if (!reason.empty()) {
      write_must_be_dead(id, topic, key_used, payload, headers, reason);
      return;
    }
    switch (n % 4) {
      case 0:
        topic.reset();
        reason = "null";
        break;
      case 1:
        topic = "bad topic!";
        reason = "character";
        break;
      case 2:
        headers["attempt"] = 1;
        reason = "header 'attempt'";
        break;
      default:
        payload["pad"] = std::string(1'100'000, 'x');  // over message.max.bytes (1,000,000)
        reason = "too large";
        break;
    }
    write_must_be_dead(id, topic, key, payload, headers, reason);
  }

  void write_must_be_dead(const std::string& id, const std::optional<std::string>& topic,
                          const std::string& key, const nlohmann::json& payload,
                          const nlohmann::json& headers, const std::string& reason) {
    static constexpr const char* kInsert =
        "INSERT INTO outbox.messages (topic, message_key, payload, headers)"
        " VALUES ($1, $2, convert_to($3, 'UTF8'), $4::jsonb)";
    bool committing = false;
    try {
      pqxx::work tx{*connection_};
      tx.exec_params(kInsert, topic, key, payload.dump(), headers.dump());
      committing = true;
      tx.commit();
    } catch (const std::exception&) {
      if (!recover(committing, id)) return;
    }
    ++counts_.malformed;
    ledger_.record(id, {key, 0, Outcome::must_be_dead, reason});
  }

  const Options& options_;
  const int writer_;
  Ledger& ledger_;
  Decisions& decisions_;
  WriterCounts& counts_;
  std::mt19937 random_;
  std::uniform_int_distribution<int> percent_{1, 100};
  std::vector<std::string> keys_;
  std::vector<int> half_key_generation_;
  std::map<std::string, int> next_sequence_;
  std::unique_ptr<pqxx::connection> connection_;
};

/// The application's status-check endpoint, answering from the writers' decisions. A share of
/// the answers are failures that carry the wrong verdict.
class StatusCheckServer {
 public:
  StatusCheckServer(const Options& options, const Decisions& decisions, EndpointCounts& counts)
      : options_(options), decisions_(decisions), counts_(counts) {
    server_.new_task_queue = [] { return new httplib::ThreadPool(32); };
    server_.Post("/check", [this](const httplib::Request& request, httplib::Response& response) {
      answer(request, response);
    });
    // Where the redirects point: a relay that followed one would act on the wrong verdict.
    server_.Post("/wrong", [](const httplib::Request& request, httplib::Response& response) {
      response.set_content(nlohmann::json{{"status", request.get_param_value("verdict")}}.dump(),
                           "application/json");
    });
    if (!server_.bind_to_port("127.0.0.1", options.status_port)) {
      throw std::runtime_error("cannot listen on 127.0.0.1:" + std::to_string(options.status_port));
    }
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(5ms);
  }
  ~StatusCheckServer() {
    server_.stop();
    thread_.join();
  }
  StatusCheckServer(const StatusCheckServer&) = delete;
  StatusCheckServer& operator=(const StatusCheckServer&) = delete;

 private:
  void answer(const httplib::Request& request, httplib::Response& response) {
    ++counts_.checks;
    const auto body = nlohmann::json::parse(request.body, nullptr, false);
    const std::string transaction_id = body.is_object() ? body.value("transaction_id", "") : "";
    const std::optional<Outcome> decision = decisions_.find(transaction_id);
    const std::string right = !decision                         ? "UNKNOWN"
                              : *decision == Outcome::committed ? "COMMIT"
                                                                : "ROLLBACK";
    const std::string wrong = decision == Outcome::committed ? "ROLLBACK" : "COMMIT";
    int fault = -1;
    {
      std::lock_guard lock(random_mutex_);
      if (percent_(random_) <= options_.endpoint_fault_percent) fault = random_() % 6;
    }
    const std::string wrong_answer = nlohmann::json{{"status", wrong}}.dump();
    switch (fault) {
      case -1:
        response.set_content(nlohmann::json{{"status", right}}.dump(), "application/json");
        return;
      case 0:
        response.status = 500;
        response.set_content(wrong_answer, "application/json");
        break;
      case 1:
        response.set_content(wrong_answer.substr(0, wrong_answer.size() - 2), "application/json");
        break;
      case 2:
        std::this_thread::sleep_for(std::chrono::milliseconds(options_.endpoint_hang_ms));
        response.set_content(wrong_answer, "application/json");
        break;
      case 3:
        response.set_content(nlohmann::json{{"status", "MAYBE_" + wrong}}.dump(),
                             "application/json");
        break;
      case 4:
        response.status = 307;  // keeps the method: a follower would POST to /wrong
        response.set_header("Location", "/wrong?verdict=" + wrong);
        break;
      default:
        response.set_content(
            nlohmann::json{{"status", wrong}, {"pad", std::string(100'000, 'x')}}.dump(),
            "application/json");
        break;
    }
    ++counts_.faults;
  }

  const Options& options_;
  const Decisions& decisions_;
  EndpointCounts& counts_;
  httplib::Server server_;
  std::mutex random_mutex_;
  std::mt19937 random_{4242};
  std::uniform_int_distribution<int> percent_{1, 100};
  std::thread thread_;
};

/// Rows of the run not yet terminal: pending or unknown. -1 while the database does not answer.
long unfinished_rows(const Options& options) {
  try {
    pqxx::connection connection{options.database_url};
    pqxx::nontransaction tx{connection};
    return tx
        .exec1(
            "SELECT count(*) FROM outbox.messages WHERE headers ? 'event-id' AND"
            " state IN ('pending', 'unknown')")[0]
        .as<long>();
  } catch (const pqxx::broken_connection&) {
    return -1;
  }
}

struct Verdict {
  long lost = 0, unexpected = 0, duplicated = 0, out_of_order = 0, stuck = 0, misparked = 0;
  long stale = 0;  ///< duplicates appended after a newer event of their key (a zombie's copy)
  double lag_p99_ms = 0, lag_max_ms = 0;  ///< good rows: insert to recorded as published
  std::string first_problem;
  void note(const std::string& problem) {
    if (first_problem.empty()) first_problem = problem;
  }
};

/// Rows that must be dead and are not, or are dead without their reason.
void check_parked(const Options& options, const std::map<std::string, Event>& events,
                  Verdict& verdict) {
  pqxx::connection connection{options.database_url};
  pqxx::nontransaction tx{connection};
  std::map<std::string, std::pair<std::string, std::string>> rows;  // event -> state, error
  for (const auto& row :
       tx.exec("SELECT headers->>'event-id', state::text, coalesce(last_error, '')"
               " FROM outbox.messages WHERE headers ? 'event-id' AND state <> 'published'")) {
    rows[row[0].c_str()] = {row[1].c_str(), row[2].c_str()};
  }
  for (const auto& [id, event] : events) {
    if (event.outcome != Outcome::must_be_dead) continue;
    const auto row = rows.find(id);
    if (row == rows.end() || row->second.first != "dead" ||
        row->second.second.find(event.reason) == std::string::npos) {
      ++verdict.misparked;
      verdict.note("not parked dead with '" + event.reason + "': " + id + " is " +
                   (row == rows.end() ? "published or missing"
                                      : row->second.first + " (" + row->second.second + ")"));
    }
  }
}

/// How long good rows waited, insert to published: poison among them must not hold them back.
void measure_lag(const Options& options, Verdict& verdict) {
  pqxx::connection connection{options.database_url};
  pqxx::nontransaction tx{connection};
  const auto row = tx.exec1(
      "SELECT coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), 0),"
      "       coalesce(max(lag), 0)"
      "  FROM (SELECT extract(epoch FROM published_at - created_at) * 1000 AS lag"
      "          FROM outbox.messages WHERE state = 'published' AND headers ? 'event-id') l");
  verdict.lag_p99_ms = row[0].as<double>();
  verdict.lag_max_ms = row[1].as<double>();
}

/// Consecutive copies of a key's events already seen. A re-send replays the unrecorded suffix of
/// the key's events in order, up to its newest; a run that stops short of the newest event the key
/// had before it began is stale: old events appended after newer ones, as a fenced instance's late
/// delivery would leave them (a consumer keeping the latest event per key would go back in time).
struct DuplicateRun {
  int length = 0;
  int last = 0;           ///< sequence of the run's last copy
  int newest_before = 0;  ///< the key's newest sequence when the run began
};

void close_run(const std::string& key, DuplicateRun& run, Verdict& verdict) {
  if (run.length > 0 && run.last < run.newest_before) {
    verdict.stale += run.length;
    verdict.note("stale copies: key " + key + " went back from sequence " +
                 std::to_string(run.newest_before) + " to " + std::to_string(run.last));
  }
  run = {};
}

Verdict check(const Options& options, const std::map<std::string, Event>& events, long stuck) {
  Verdict verdict;
  verdict.stuck = stuck;
  if (stuck != 0) verdict.note(std::to_string(stuck) + " rows still pending or unknown");
  const auto messages =
      options.read_committed
          ? outbox::test::read_topic_to_end(options.kafka, options.topic, /*committed=*/true, 30s)
          : outbox::test::read_topic(options.kafka, options.topic, 30s);
  std::map<std::string, int> seen;
  std::map<std::string, int> last_sequence;  // per key, by first occurrence
  std::map<std::string, DuplicateRun> runs;
  for (const auto& message : messages) {
    const auto payload = nlohmann::json::parse(message.payload, nullptr, false);
    const std::string id = payload.is_object() ? payload.value("event", "") : "";
    const auto event = events.find(id);
    if (event == events.end() || event->second.outcome != Outcome::committed) {
      ++verdict.unexpected;
      verdict.note("unexpected in Kafka: " + message.payload.substr(0, 200));
      continue;
    }
    int& last = last_sequence[event->second.key];
    DuplicateRun& run = runs[event->second.key];
    if (seen[id]++ > 0) {
      ++verdict.duplicated;
      if (run.length == 0) run.newest_before = last;
      ++run.length;
      run.last = event->second.sequence;
      continue;
    }
    close_run(event->second.key, run, verdict);
    if (event->second.sequence <= last) {
      ++verdict.out_of_order;
      verdict.note("key " + event->second.key + ": sequence " +
                   std::to_string(event->second.sequence) + " after " + std::to_string(last));
    }
    last = std::max(last, event->second.sequence);
  }
  for (auto& [key, run] : runs) close_run(key, run, verdict);
  for (const auto& [id, event] : events) {
    if (event.outcome == Outcome::committed && !seen.contains(id)) {
      ++verdict.lost;
      verdict.note("lost: " + id);
    }
  }
  check_parked(options, events, verdict);
  measure_lag(options, verdict);
  return verdict;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{"Writes a workload while faults are injected, then checks what reached Kafka."};
  app.add_option("--database", options.database_url, "PostgreSQL URL of the relay's database")
      ->required();
  app.add_option("--topic", options.topic, "Topic the events go to (fresh per run)")->required();
  app.add_option("--kafka", options.kafka, "Kafka bootstrap servers")->capture_default_str();
  app.add_option("--seconds", options.seconds, "How long the writers write")->capture_default_str();
  app.add_option("--writers", options.writers, "Concurrent writers")->capture_default_str();
  app.add_option("--keys", options.keys, "Keys (each owned by one writer)")->capture_default_str();
  app.add_option("--rollback-percent", options.rollback_percent, "Transactions rolled back")
      ->capture_default_str();
  app.add_option("--late-percent", options.late_percent, "Transactions held open before commit")
      ->capture_default_str();
  app.add_option("--rate", options.rate,
                 "Transactions per second, all writers together (0: unpaced)")
      ->capture_default_str();
  app.add_option("--late-seconds", options.late_seconds, "How long a late one is held open")
      ->capture_default_str();
  app.add_option("--drain-timeout", options.drain_timeout_seconds,
                 "Seconds to wait for the relay to drain after writing")
      ->capture_default_str();
  app.add_option("--half-percent", options.half_percent,
                 "Events written as half messages (prepare, then commit or rollback)")
      ->capture_default_str();
  app.add_option("--crash-percent", options.crash_percent,
                 "Half messages whose writer dies after deciding, before telling the outbox")
      ->capture_default_str();
  app.add_option("--abandon-percent", options.abandon_percent,
                 "Half messages nobody ever decides (must end dead: check-back exhausted)")
      ->capture_default_str();
  app.add_option("--slow-decide-ms", options.slow_decide_ms,
                 "One half message in ten is decided this late, racing the sweeper's checks")
      ->capture_default_str();
  app.add_option("--status-port", options.status_port,
                 "Serve the status-check endpoint (POST /check) on this loopback port");
  app.add_option("--endpoint-fault-percent", options.endpoint_fault_percent,
                 "Status-check answers that are failures carrying the wrong verdict")
      ->capture_default_str();
  app.add_option("--endpoint-hang-ms", options.endpoint_hang_ms,
                 "How long a hanging status-check answer takes (longer than the relay's timeout)")
      ->capture_default_str();
  app.add_option("--malformed-percent", options.malformed_percent,
                 "Transactions that insert a malformed row (null or invalid topic, bad header, "
                 "oversized payload)")
      ->capture_default_str();
  app.add_flag("--poison", options.poison,
               "Malformed rows are of every hostile kind: a 5 kB key with no topic, a newline in "
               "the topic, a 100 kB topic, a forged id header, an infinite created_at")
      ->needs(app.get_option("--malformed-percent"));
  app.add_option("--max-lag-ms", options.max_lag_ms,
                 "Fail when the p99 insert-to-published time of good rows is over this (0: off)")
      ->capture_default_str();
  app.add_option("--max-takeover-ms", options.max_lag_max_ms,
                 "Fail when the slowest good row's insert-to-published is over this: how long the "
                 "keys of a lost instance waited (0: off)")
      ->capture_default_str();
  app.add_flag("--allow-stale", options.allow_stale,
               "Count stale copies (old events appended after newer ones of their key) without "
               "failing on them");
  app.add_flag("--read-committed", options.read_committed,
               "Read as a read_committed consumer (kafka.exactly_once) and fail on any duplicate");
  app.add_option("--delete-after", options.delete_after,
                 "Topics to delete once the check passed (a failed check keeps them to be read), "
                 "so the broker a later scenario restarts holds only what is in use");
  CLI11_PARSE(app, argc, argv);
  if (options.half_percent > 0 && options.status_port == 0) {
    std::cerr << "fault-checker: --half-percent needs --status-port\n";
    return 64;
  }

  Ledger ledger;
  Decisions decisions;
  WriterCounts counts;
  EndpointCounts endpoint_counts;
  std::optional<StatusCheckServer> status_endpoint;
  if (options.status_port != 0) status_endpoint.emplace(options, decisions, endpoint_counts);
  std::cerr << "fault-checker: " << options.writers << " writers for " << options.seconds
            << " s on topic " << options.topic << "\n";
  {
    std::vector<std::jthread> writers;
    for (int writer = 0; writer < options.writers; ++writer) {
      writers.emplace_back(
          [&, writer] { Writer(options, writer, ledger, decisions, counts).run(); });
    }
  }
  std::cerr << "fault-checker: writing done (" << counts.committed << " committed, "
            << counts.rolled_back << " rolled back); waiting for the relay to drain\n";
  const auto drain_deadline = Clock::now() + std::chrono::seconds(options.drain_timeout_seconds);
  long unfinished = unfinished_rows(options);
  while (unfinished != 0 && Clock::now() < drain_deadline) {
    std::this_thread::sleep_for(500ms);
    unfinished = unfinished_rows(options);
  }
  try {
    const Verdict verdict = check(options, ledger.events(), std::max(0L, unfinished));
    std::cout << "committed=" << counts.committed << " rolled_back=" << counts.rolled_back
              << " late=" << counts.late << " in_doubt=" << counts.in_doubt
              << " connection_errors=" << counts.connection_errors;
    if (options.half_percent > 0) {
      std::cout << " half=" << counts.half << " crashed=" << counts.crashed
                << " abandoned=" << counts.abandoned << " checks=" << endpoint_counts.checks
                << " bad_answers=" << endpoint_counts.faults;
    }
    if (options.malformed_percent > 0) std::cout << " malformed=" << counts.malformed;
    std::cout << " lost=" << verdict.lost << " unexpected=" << verdict.unexpected
              << " duplicated=" << verdict.duplicated << " out_of_order=" << verdict.out_of_order
              << " stuck=" << verdict.stuck << " misparked=" << verdict.misparked
              << " stale=" << verdict.stale
              << " lag_p99_ms=" << static_cast<long>(verdict.lag_p99_ms)
              << " lag_max_ms=" << static_cast<long>(verdict.lag_max_ms) << "\n";
    const int status = [&] {
      const bool lag_over = options.max_lag_ms > 0 && verdict.lag_p99_ms > options.max_lag_ms;
      if (lag_over) {
        std::cerr << "fault-checker: FAILED; good rows' p99 lag " << verdict.lag_p99_ms
                  << " ms is over " << options.max_lag_ms << " ms\n";
        return 1;
      }
      if (options.max_lag_max_ms > 0 && verdict.lag_max_ms > options.max_lag_max_ms) {
        std::cerr << "fault-checker: FAILED; the slowest good row took " << verdict.lag_max_ms
                  << " ms, over the takeover bound of " << options.max_lag_max_ms << " ms\n";
        return 1;
      }
      if (verdict.lost + verdict.unexpected + verdict.out_of_order + verdict.stuck +
              verdict.misparked + (options.allow_stale ? 0 : verdict.stale) +
              (options.read_committed ? verdict.duplicated : 0) >
          0) {
        std::cerr << "fault-checker: FAILED; first problem: " << verdict.first_problem << "\n";
        return 1;
      }
      return 0;
    }();
    if (status == 0) {
      try {
        outbox::test::delete_topics_containing(options.kafka, options.delete_after);
      } catch (const std::exception& error) {  // housekeeping: the verdict stands
        std::cerr << "fault-checker: topics not deleted: " << error.what() << "\n";
      }
    }
    return status;
  } catch (const std::exception& error) {
    std::cerr << "fault-checker: " << error.what() << "\n";
    return 2;
  }
}
