#include "relay/pipeline/relay_loop.hpp"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <set>

#include "relay/core/assert.hpp"
#include "relay/core/backoff.hpp"
#include "relay/core/stop_event.hpp"
#include "relay/core/text.hpp"
#include "relay/pipeline/dead_key_holds.hpp"
#include "relay/pipeline/exactly_once.hpp"
#include "relay/pipeline/in_flight_window.hpp"
#include "relay/pipeline/loop_telemetry.hpp"
#include "relay/pipeline/outcome_recorder.hpp"
#include "relay/pipeline/topic_holds.hpp"
#include "relay/publisher/publisher.hpp"
#include "relay/store/store.hpp"

namespace outbox {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The slice of the waits that cannot block on an event: serving a stalled batch's deliveries,
// waiting for the recorder. (The idle wait blocks until its deadline; a stop ends it at once.)
constexpr milliseconds kStopCheckInterval{200};
// How long one wait for delivery reports may last while batches are in flight; it also bounds how
// late a NOTIFY that arrives meanwhile is noticed.
constexpr milliseconds kDeliveryPollInterval{1};
constexpr std::chrono::seconds kProgressLogInterval{10};
constexpr std::chrono::seconds kKafkaProbeInterval{5};
constexpr milliseconds kKafkaProbeTimeout{1000};
// How often held topics are looked at for release.
constexpr milliseconds kHoldCheckInterval{50};
// exactly_once: how long one of Kafka's transaction calls (init, fence, a marker read, an abort)
// may take before it is retried with backoff.
constexpr milliseconds kTransactionCallTimeout{10000};

std::shared_ptr<spdlog::logger> pipeline_log() {
  auto logger = spdlog::get("pipeline");
  return logger ? logger : spdlog::default_logger();
}

PublishedRows published_rows_of(const Config& config) {
  return config.retention.delete_on_publish ? PublishedRows::delete_at_once : PublishedRows::keep;
}

/// One run of the loop; RelayLoop::run owns it. Split out so the loop's state has a home.
class LoopState {
 public:
  LoopState(const Config& config, Telemetry& telemetry, Failpoints failpoints, std::stop_token stop)
      : config_(config),
        failpoints_(failpoints),
        readiness_(telemetry.readiness),
        metrics_(telemetry.metrics),
        registry_(telemetry.metrics),
        stop_(std::move(stop)),
        store_(config.postgres, config.routing, config.relay),
        // With exactly_once the producer needs its transactional id, which names the database:
        // it is created once the store has connected (ensure_transactional_publisher).
        publisher_(config.kafka.exactly_once ? nullptr : make_publisher()),
        recorder_(config.postgres, published_rows_of(config)),
        store_backoff_(config.relay.backoff_initial,
                       std::min(config.relay.backoff_max, kReconnectBackoffMax)),
        holds_(config.relay.backoff_initial, config.relay.backoff_max),
        limits_{config.relay.batch_size, config.relay.batch_max_bytes,
                producer_message_max_bytes(config.kafka)} {}

  void run() {
    bool ever_connected = false;
    while (!stop_.stop_requested()) {
      try {
        step();
        ever_connected = true;
        store_backoff_.reset();
      } catch (const LeaseLost& error) {
        fence(error.what());
      } catch (const TransactionError& error) {
        // Kafka did not answer a transaction call in time, or this producer was fenced: retried
        // with backoff; a fenced producer is replaced by the next generation first.
        abandon_open_transaction(error.what());  // e.g. a marker refused: never commit without it
        if (error.fatal) discard_transactional_publisher(error.what());
        readiness_.kafka = false;
        const milliseconds delay = store_backoff_.next_delay();
        pipeline_log()->warn("event=kafka_transaction_failed retry_in_ms={} error=\"{}\"",
                             delay.count(), printable(error.what()));
        serve_deliveries_for(delay);
      } catch (const StoreUnavailable& error) {
        readiness_.postgres = false;
        const milliseconds delay = store_backoff_.next_delay();
        pipeline_log()->warn(
            "event=postgres_unavailable retry_in_ms={} in_flight_batches={} error=\"{}\"",
            delay.count(), window_.chained(), printable(error.what()));
        serve_deliveries_for(delay);
      } catch (const PublisherConfigError&) {
        throw;  // the configuration must change: exit 78
      } catch (const std::exception& error) {
        // Not an outage and not a row (rows are isolated by the store): a statement that cannot
        // run as written, e.g. a table dropped or a privilege revoked while the relay runs. At the
        // first step it is a setup problem worth exiting for (missing schema: run migrate); later
        // it is retried with backoff, so the relay keeps serving what it can.
        if (!ever_connected) throw;
        const milliseconds delay = store_backoff_.next_delay();
        pipeline_log()->error("event=loop_error retry_in_ms={} error=\"{}\"", delay.count(),
                              printable(error.what()));
        store_.disconnect();
        serve_deliveries_for(delay);
      }
      log_progress_if_due();
      probe_kafka_if_due();
    }
    shut_down();
  }

 private:
  bool exactly_once() const { return config_.kafka.exactly_once; }

  std::unique_ptr<KafkaPublisher> make_publisher() {
    return std::make_unique<KafkaPublisher>(
        config_.kafka, config_.routing, dead_keys_,
        exactly_once() ? std::optional<std::string>(transactional_id_) : std::nullopt);
  }

  void step() {
    // First, before anything is produced or polled: a lease this instance could not renew in time
    // may be another's by now.
    fence_if_lease_ran_out();
    if (!store_.connected()) {
      store_.ensure_connected();
      next_rebalance_ = Clock::now();  // leases died with the old session
      caught_up_ = false;
      // Its rows' lanes may have moved meanwhile: what was not committed must not be.
      owned_lane_ids_.clear();
      unrecovered_lanes_.clear();
      abandon_open_transaction("the PostgreSQL session was lost; its lanes may have moved");
    }
    readiness_.postgres = true;
    if (exactly_once()) ensure_transactional_publisher();
    if (Clock::now() >= next_rebalance_ || (releasing_lanes_ && nothing_in_flight())) rebalance();
    recover_lanes();
    release_due_holds();
    if (exactly_once()) {
      step_transactional();
      return;
    }
    // Rows committed while batches are in flight are claimed when they are announced or when the
    // next look is due, not after those batches are recorded: a claim waiting for the recorder's
    // commit (which competes with the writers' commits for the WAL flush) put that commit's
    // every stall into each row's latency. Pipelining keeps commit-to-ack near one round trip.
    if (caught_up_ && window_.chained() > 0 &&
        (Clock::now() >= next_look_ || store_.wait_for_wakeup(milliseconds(0)))) {
      caught_up_ = false;
    }
    claim_and_produce();
    StageTimes::timed(stage_times_.await_kafka, [&] {
      publisher_->poll(can_claim() ? milliseconds(0) : kDeliveryPollInterval);
    });
    // Again after the poll, where a frozen process wakes: the reports it just served are counted
    // by the fence before any batch leaves for the recorder.
    fence_if_lease_ran_out();
    hold_failed_topics();
    move_stalled_batches();
    record_completed_batches();
    if (publisher_->has_fatal_error()) replace_publisher();
    if (window_.chained() == 0 && !can_claim()) wait_for_work();
  }

  bool nothing_in_flight() const { return window_.empty() && open_batches_.empty(); }

  bool can_claim() const {
    return !caught_up_ && !releasing_lanes_ && Clock::now() < lease_valid_until_ &&
           publisher_ != nullptr && unrecovered_lanes_.empty() &&
           window_.stalled_bytes() < in_flight_byte_limit() &&
           window_.chained() < static_cast<std::size_t>(config_.relay.max_in_flight_batches);
  }

  /// Rows of stalled batches still in librdkafka are bounded like the in-flight window, so a topic
  /// that never acknowledges cannot make the relay hold more than twice the window in memory.
  std::int64_t in_flight_byte_limit() const {
    return config_.relay.batch_max_bytes * config_.relay.max_in_flight_batches;
  }

  void rebalance() {
    const LaneOwnership ownership = store_.rebalance_lanes(/*may_release=*/nothing_in_flight());
    lease_valid_until_ = ownership.lease_valid_until;
    metrics_.heartbeats.increment();
    metrics_.instances_ended.increment(ownership.ended_instances.size());
    // Lanes are handed over only with nothing in flight, so the next owner never publishes a row
    // this instance has produced but not yet recorded (no duplicates in steady state).
    releasing_lanes_ = ownership.owned.size() > static_cast<std::size_t>(ownership.fair_share);
    if (ownership.owned.size() != owned_lanes_) caught_up_ = false;
    owned_lanes_ = ownership.owned.size();
    owned_lane_ids_ = ownership.owned;
    if (exactly_once()) {
      unrecovered_lanes_.insert(unrecovered_lanes_.end(), ownership.acquired.begin(),
                                ownership.acquired.end());
    }
    readiness_.lanes_owned = static_cast<int>(owned_lanes_);
    metrics_.lanes_owned.set(static_cast<double>(owned_lanes_));
    next_rebalance_ = Clock::now() + config_.relay.lane_rebalance_interval;
  }

  void claim_and_produce() {
    while (can_claim() && !stop_.stop_requested()) {
      window_.ids(in_flight_ids_);
      ClaimedBatch claimed = StageTimes::timed(stage_times_.claim, [&] {
        return store_.claim_batch(in_flight_ids_, holds_.routes(), limits_);
      });
      if (!claimed.rows.empty()) found_rows_since_look_ = true;
      caught_up_ = claimed.reached_end;
      if (caught_up_) schedule_next_look();
      count_problems(claimed.problems);
      if (claimed.rows.empty()) {
        if (!claimed.problems.empty()) continue;  // the rows it isolated are out of the way now
        return;
      }
      metrics_.batch_size.observe(static_cast<double>(claimed.rows.size()));
      auto batch = std::make_unique<PublishBatch>(std::move(claimed.rows));
      StageTimes::timed(stage_times_.produce, [&] {
        publisher_->produce(*batch, [this] { return !stop_.stop_requested(); });
      });
      window_.add(std::move(batch), Clock::now());
      // Topics refused at produce time are held before the next claim, so it skips their rows.
      hold_failed_topics();
      if (failpoints_.producer_fatal_after_batches &&
          ++batches_produced_ == *failpoints_.producer_fatal_after_batches) {
        pipeline_log()->warn("event=failpoint name=producer_fatal_after_batches");
        publisher_->inject_fatal_error("failpoint producer_fatal_after_batches");
      }
    }
  }

  // --- exactly_once (relay/pipeline/exactly_once.hpp states the rules) -----------------------

  /// Creates the transactional producer of the current generation when there is none: the marker
  /// topic first (once), then init_transactions. Every lane held then names an earlier producer
  /// (or this instance's previous generation), so each is recovered again before its next claim.
  void ensure_transactional_publisher() {
    if (publisher_) return;
    if (database_identity_.empty()) database_identity_ = store_.database_identity();
    if (!marker_topic_ready_) {
      ensure_marker_topic(config_.kafka, config_.kafka.marker_topic, kTransactionCallTimeout);
      marker_topic_ready_ = true;
    }
    transactional_id_ = transactional_id_for(config_.kafka.transactional_id_prefix,
                                             database_identity_, store_.instance(), generation_);
    auto publisher = make_publisher();
    publisher->init_transactions(kTransactionCallTimeout);
    publisher_ = std::move(publisher);
    committed_seq_ = 0;
    store_.set_lane_publisher(transactional_id_);
    unrecovered_lanes_ = owned_lane_ids_;
    readiness_.kafka = true;
    pipeline_log()->info("event=transactional_producer_ready transactional_id=\"{}\"",
                         printable(transactional_id_, 512));
  }

  /// The producer can no longer be used (fenced, fatal, or its abort did not finish): the next
  /// step creates the next generation. Only with nothing of it in librdkafka's hands.
  void discard_transactional_publisher(const std::string& why) {
    if (!exactly_once() || !publisher_) return;
    RELAY_ASSERT(open_batches_.empty(), "the open transaction was ended first");
    pipeline_log()->warn(
        "event=transactional_producer_replaced transactional_id=\"{}\" "
        "reason=\"{}\"",
        printable(transactional_id_, 512), printable(why));
    publisher_.reset();
    ++generation_;
    store_.set_lane_publisher(std::nullopt);
  }

  /// Each lane taken since the last step: fence the producer its row names, mark published what
  /// that producer committed and did not record (its last marker), then name this producer.
  void recover_lanes() {
    if (unrecovered_lanes_.empty()) return;
    // Which producer each lane names; those that name another are fenced (once per producer, and
    // a fence stays) before any marker is read, so no commit of theirs can land after the read.
    std::map<std::int32_t, OutboxStore::LaneTransaction> previous;
    std::set<std::string> producers;
    for (LaneId lane : unrecovered_lanes_) {
      OutboxStore::LaneTransaction named = store_.lane_transaction(lane);
      if (!named.transactional_id || *named.transactional_id == transactional_id_) continue;
      if (!fenced_ids_.contains(*named.transactional_id)) {
        fence_transactional_id(config_.kafka, *named.transactional_id, kTransactionCallTimeout);
        fenced_ids_.insert(*named.transactional_id);
      }
      producers.insert(*named.transactional_id);
      previous[lane.value] = std::move(named);
    }
    const std::map<std::string, std::string> markers = read_last_committed(
        config_.kafka, config_.kafka.marker_topic, producers, kTransactionCallTimeout);
    for (const auto& [lane, named] : previous) {
      std::optional<TransactionMarker> marker;
      if (const auto text = markers.find(*named.transactional_id); text != markers.end()) {
        marker = decode_marker(text->second);
      }
      // The marker's rows of every lane: the producer committed them all. Marking is idempotent,
      // so a second lane of the same producer marks only what is still pending (none).
      const std::vector<OutboxId> ids =
          ids_to_recover(named.transactional_id, named.committed_seq, marker);
      std::size_t marked = 0;
      if (!ids.empty()) {
        marked = store_.mark_recovered(ids, config_.retention.delete_on_publish,
                                       "published by " + *named.transactional_id +
                                           " in transaction " + std::to_string(marker->seq) +
                                           "; recorded from the marker topic");
      }
      metrics_.lanes_fenced.increment();
      metrics_.recovered_rows.increment(marked);
      pipeline_log()->info(
          "event=lane_taken_over lane={} fenced_transactional_id=\"{}\" committed_seq={} "
          "marker_seq={} marker_rows={} rows_marked_published={}",
          lane, printable(*named.transactional_id, 512), named.committed_seq,
          marker ? marker->seq : 0, ids.size(), marked);
    }
    for (LaneId lane : unrecovered_lanes_)
      store_.take_lane(lane, transactional_id_, committed_seq_);
    unrecovered_lanes_.clear();
  }

  /// A transaction carries up to relay.max_in_flight_batches claimed batches: claimed and
  /// produced one after another while rows come (Kafka acknowledges the first while the next are
  /// claimed), then committed. Meanwhile up to as many committed batches wait for the recorder, so
  /// a transaction's marker lists every row that is committed and not yet recorded: the
  /// producer's last marker always covers what its lanes' next owners must mark
  /// (exactly_once.hpp).
  void step_transactional() {
    const auto limit = static_cast<std::size_t>(config_.relay.max_in_flight_batches);
    while (open_batches_.size() < limit && window_.chained() < limit && can_claim() &&
           !stop_.stop_requested()) {
      std::unique_ptr<PublishBatch> batch = claim_next();
      if (!batch) break;
      produce_in_transaction(std::move(batch));
    }
    if (!open_batches_.empty()) commit_open_transaction();
    if (publisher_) publisher_->poll(milliseconds(0));
    hold_failed_topics();
    record_completed_batches();
    if (publisher_ && publisher_->has_fatal_error()) replace_publisher();
    // Caught up: look for rows again after the poll wait, whether or not the recorder is done
    // (a claim need not wait for it; only a full window does).
    if (window_.chained() >= limit) {
      recorder_.wait_idle(kDeliveryPollInterval);
    } else if (!can_claim()) {
      wait_for_work();
    }
  }

  /// The next batch of pending rows, skipping those in flight (the window's, the open
  /// transaction's); null when there is none.
  std::unique_ptr<PublishBatch> claim_next() {
    window_.ids(in_flight_ids_);
    for (const auto& open : open_batches_) {
      for (const OutboxRow& row : open->rows()) in_flight_ids_.push_back(row.id);
    }
    ClaimedBatch claimed = StageTimes::timed(stage_times_.claim, [&] {
      return store_.claim_batch(in_flight_ids_, holds_.routes(), limits_);
    });
    if (!claimed.rows.empty()) found_rows_since_look_ = true;
    caught_up_ = claimed.reached_end;
    if (caught_up_) schedule_next_look();
    count_problems(claimed.problems);
    if (claimed.rows.empty()) {
      if (!claimed.problems.empty()) caught_up_ = false;  // the isolated rows are out of the way
      return nullptr;
    }
    metrics_.batch_size.observe(static_cast<double>(claimed.rows.size()));
    return std::make_unique<PublishBatch>(std::move(claimed.rows));
  }

  void produce_in_transaction(std::unique_ptr<PublishBatch> batch) {
    if (open_batches_.empty()) publisher_->begin_transaction();
    open_batches_.push_back(std::move(batch));  // from here on it is ended, whatever happens
    StageTimes::timed(stage_times_.produce, [&] {
      publisher_->produce(*open_batches_.back(), [this] { return !stop_.stop_requested(); });
    });
    hold_failed_topics();
  }

  /// The open transaction's marker: its rows handed to Kafka (not those refused or held at
  /// produce time: they stay pending), and the rows committed earlier and not recorded yet.
  void produce_marker() {
    TransactionMarker marker{transactional_id_, committed_seq_ + 1, {}};
    for (const auto& open : open_batches_) {
      for (std::size_t i = 0; i < open->rows().size(); ++i) {
        const bool handed_over =
            !open->row_final(i) || open->reports()[i].outcome == DeliveryOutcome::delivered;
        if (handed_over) marker.ids.push_back(open->rows()[i].id);
      }
    }
    window_.any_batch([&](const PublishBatch& unrecorded) {
      for (std::size_t i = 0; i < unrecorded.rows().size(); ++i) {
        if (unrecorded.reports()[i].outcome == DeliveryOutcome::delivered) {
          marker.ids.push_back(unrecorded.rows()[i].id);
        }
      }
      return false;
    });
    publisher_->produce_marker(config_.kafka.marker_topic, transactional_id_,
                               encode_marker(marker));
  }

  void commit_open_transaction() {
    // A frozen process wakes here as well as anywhere: no commit after the lease ran out.
    fence_if_lease_ran_out();
    if (open_batches_.empty()) return;
    produce_marker();
    ++commits_attempted_;
    if (failpoints_.freeze_before_commit == commits_attempted_) {
      pipeline_log()->warn("event=failpoint name=freeze_before_commit");
      raise(SIGSTOP);
    }
    std::vector<PublishBatch*> batches;
    for (const auto& open : open_batches_) batches.push_back(open.get());
    const KafkaPublisher::TransactionEnd end = StageTimes::timed(stage_times_.await_kafka, [&] {
      return publisher_->end_transaction(batches, config_.relay.topic_stall_timeout);
    });
    if (failpoints_.kill_after_commit == commits_attempted_ &&
        end.ending == KafkaPublisher::Ending::committed) {
      pipeline_log()->warn("event=failpoint name=kill_after_commit");
      pipeline_log()->flush();
      raise(SIGKILL);
    }
    finish_transaction(end);
  }

  /// The batches of an ended transaction go to the recorder: committed rows become published
  /// (and the transaction recorded for the lanes with its last batch), the rest stay pending or
  /// are parked dead.
  void finish_transaction(const KafkaPublisher::TransactionEnd& end) {
    std::vector<std::unique_ptr<PublishBatch>> batches = std::exchange(open_batches_, {});
    std::vector<TopicFailure> failures = publisher_->take_topic_failures();
    std::size_t rows = 0;
    for (const auto& batch : batches) rows += batch->rows().size();
    switch (end.ending) {
      case KafkaPublisher::Ending::committed:
        committed_seq_ += 1;
        // Recorded in order, so once the last batch is, the whole transaction is.
        commits_[batches.back()->reports().data()] = LaneCommit{transactional_id_, committed_seq_};
        metrics_.transactions_committed.increment();
        break;
      case KafkaPublisher::Ending::aborted:
      case KafkaPublisher::Ending::fenced:
        (end.ending == KafkaPublisher::Ending::aborted ? metrics_.transactions_aborted
                                                       : metrics_.transactions_fenced)
            .increment();
        pipeline_log()->warn(
            "event=transaction_aborted transactional_id=\"{}\" rows={} timed_out={} fenced={} "
            "error=\"{}\" effect=\"nothing of it is visible to read_committed consumers; its rows "
            "are produced again\"",
            printable(transactional_id_, 512), rows, end.timed_out,
            end.ending == KafkaPublisher::Ending::fenced, printable(end.error));
        if (!end.timed_out) {
          // The abort purged rows that had nothing wrong with them: only the culprits' topics
          // are held. A commit that timed out holds every topic that had not acknowledged.
          std::erase_if(failures, [](const TopicFailure& failure) {
            return failure.error_code == "_PURGE_QUEUE" || failure.error_code == "_PURGE_INFLIGHT";
          });
        }
        break;
    }
    hold_topics(failures);
    for (auto& batch : batches) window_.add(std::move(batch), Clock::now());
    if (end.ending == KafkaPublisher::Ending::fenced) {
      discard_transactional_publisher(end.error);
    }
  }

  /// Ends the open transaction without committing it (its rows stay pending, not recorded),
  /// and replaces the producer when the abort did not finish.
  void abandon_open_transaction(const std::string& why) {
    if (open_batches_.empty()) return;
    const bool aborted = publisher_->abort_transaction(kTransactionCallTimeout);
    std::size_t rows = 0;
    for (const auto& batch : open_batches_) rows += batch->rows().size();
    pipeline_log()->warn(
        "event=transaction_abandoned transactional_id=\"{}\" rows={} aborted={} "
        "reason=\"{}\"",
        printable(transactional_id_, 512), rows, aborted, printable(why));
    metrics_.transactions_aborted.increment();
    publisher_->drain(milliseconds(0));  // every row reported: the batches can go
    publisher_->take_topic_failures();
    open_batches_.clear();
    // Not aborted (Kafka away): whoever takes these lanes next, this instance included, fences
    // the id, which aborts the transaction then.
    if (!aborted) discard_transactional_publisher(why);
  }

  /// A clean stop with everything recorded: the lanes' next owner need not fence this producer.
  void release_lanes_recorded() {
    if (!exactly_once() || !publisher_ || !nothing_in_flight()) return;
    try {
      store_.release_lanes_of(transactional_id_);
    } catch (const std::exception& error) {
      pipeline_log()->info(
          "event=lanes_not_released error=\"{}\" effect=\"their next owner "
          "fences this producer first\"",
          printable(error.what()));
    }
  }

  void count_problems(const std::vector<RowProblem>& problems) {
    for (const RowProblem& problem : problems) {
      if (problem.quarantined) {
        metrics_.quarantined.increment();
      } else {
        ++totals_.dead;
        metrics_.isolated_parked.increment();
      }
    }
  }

  void hold_failed_topics() {
    if (publisher_) hold_topics(publisher_->take_topic_failures());  // none: exactly_once, replaced
  }

  /// Each failure holds its topic (see TopicHolds::hold_all); logged once per topic and error,
  /// then once a minute; counted per row.
  void hold_topics(const std::vector<TopicFailure>& failures) {
    if (failures.empty()) return;
    for (const TopicFailure& failure : failures) {
      registry_
          .counter("outbox_topic_failures_total",
                   "Rows whose topic refused or did not acknowledge them, by topic and error; "
                   "the topic is held back, other topics flow.",
                   {{"topic", failure.topic}, {"error", failure.error_code}})
          .increment();
    }
    const TopicHolds::Attempt attempt = holds_.hold_all(failures, Clock::now());
    for (const auto& [failure, event] : attempt.to_log) {
      pipeline_log()->warn(
          "event=topic_held topic=\"{}\" error_code={} error=\"{}\" retry_in_ms={} "
          "effect=\"rows of this topic wait, in order; other topics flow\"",
          printable(failure->topic, 256), failure->error_code, printable(failure->error),
          event.retry_in.count());
    }
    if (attempt.newly_held) publish_holds();
  }

  void release_due_holds() {
    if (holds_.empty()) return;
    const auto now = Clock::now();
    if (now < next_hold_check_) return;
    next_hold_check_ = now + kHoldCheckInterval;
    const auto released = holds_.release_due(now, [&](const std::string& route) {
      return window_.any_batch([&](const PublishBatch& batch) {
        return std::any_of(batch.rows().begin(), batch.rows().end(),
                           [&](const OutboxRow& row) { return row.route == route; });
      });
    });
    for (const std::string& route : released) {
      pipeline_log()->info(
          "event=topic_released route=\"{}\" effect=\"its rows are claimed "
          "again from the oldest\"",
          printable(route, 256));
    }
    if (!released.empty()) {
      caught_up_ = false;
      publish_holds();
    }
  }

  void publish_holds() {
    registry_.clear_gauge("outbox_topic_held");
    for (const TopicHolds::Held& held : holds_.held()) {
      registry_
          .gauge("outbox_topic_held",
                 "1 while a topic is held back after a failure of its own (label error: the "
                 "failure that started the hold).",
                 {{"topic", held.topic}, {"error", held.error_code}})
          .set(1);
    }
    metrics_.topics_held.set(static_cast<double>(holds_.held().size()));
  }

  /// The chain's front batches incomplete past the stall timeout leave the chain (see
  /// InFlightWindow); the topics of their unfinished rows are held, and the rows say so in
  /// last_error.
  void move_stalled_batches() {
    const auto overdue = window_.stall_overdue(Clock::now(), config_.relay.topic_stall_timeout);
    if (overdue.empty()) return;         // every step: nothing is built unless a batch stalled
    std::vector<TopicFailure> failures;  // held once below: one stall, one failure per topic
    const std::string reason = "stalled: Kafka has not acknowledged the row within " +
                               std::to_string(config_.relay.topic_stall_timeout.count()) +
                               " ms (no leader, too few in-sync replicas, or a broker away)";
    for (const PublishBatch* stalled : overdue) {
      std::vector<OutboxId> waiting;
      for (std::size_t i = 0; i < stalled->rows().size(); ++i) {
        const OutboxRow& row = stalled->rows()[i];
        if (stalled->row_final(i)) continue;
        waiting.push_back(row.id);
        if (row.route) failures.push_back({*row.route, row.topic, "stalled", reason});
      }
      ++totals_.stalled_batches;
      store_.note_waiting(waiting, reason);
    }
    hold_topics(failures);
  }

  /// Queues at the recorder what has finished, in the window's order (see InFlightWindow).
  void record_completed_batches() {
    window_.submit_ready([&](std::uint64_t ticket, std::span<const DeliveryReport> reports) {
      // exactly_once: a committed batch is recorded with its transaction (see finish_transaction).
      const auto commit = commits_.find(reports.data());
      recorder_.submit(ticket, reports,
                       commit == commits_.end() ? std::nullopt : std::optional(commit->second));
    });
    finish_recorded_batches();
  }

  void finish_recorded_batches() {
    std::optional<std::string> failure;
    for (OutcomeRecorder::Completion& completion : recorder_.completed()) {
      for (RowProblem& problem : completion.problems) {
        if (!problem.quarantined) continue;
        // The recorder knows ids only; the key, which the quarantine holds back, is in the batch.
        if (!problem.key) problem.key = key_in_flight(problem.id);
        store_.quarantine(problem);
      }
      count_problems(completion.problems);
      if (completion.error) failure = completion.error;
      window_.complete(completion.ticket, completion.error.has_value(),
                       [&](const PublishBatch& batch, std::span<const DeliveryReport> reports,
                           std::span<const std::size_t> rows, bool whole) {
                         if (whole) dead_keys_.recorded(batch.rows(), batch.reports());
                         if (whole) commits_.erase(batch.reports().data());
                         count(reports, batch.rows(), rows);  // no rows: all of them
                       });
    }
    window_.release_done_stalled(
        [&](const PublishBatch& batch) { dead_keys_.recorded(batch.rows(), batch.reports()); });
    if (failure) throw StoreUnavailable(*failure);
  }

  std::optional<std::string> key_in_flight(OutboxId id) const {
    std::optional<std::string> key;
    window_.any_batch([&](const PublishBatch& batch) {
      const auto row = std::find_if(batch.rows().begin(), batch.rows().end(),
                                    [&](const OutboxRow& candidate) { return candidate.id == id; });
      if (row == batch.rows().end()) return false;
      key = row->key;
      return true;
    });
    return key;
  }

  /// Counts recorded reports (all of them, or those at `indexes` when given).
  void count(std::span<const DeliveryReport> reports, std::span<const OutboxRow> rows,
             std::span<const std::size_t> indexes) {
    const double now_ms =
        static_cast<double>(std::chrono::duration_cast<milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
    const std::size_t n = indexes.empty() ? reports.size() : indexes.size();
    for (std::size_t k = 0; k < n; ++k) {
      const DeliveryReport& report = reports[k];
      const OutboxRow& row = rows[indexes.empty() ? k : indexes[k]];
      switch (report.outcome) {
        case DeliveryOutcome::delivered:
          ++totals_.published;
          metrics_.published.increment();
          if (row.route) holds_.delivered(*row.route);
          if (row.created_at_ms > 0) {
            metrics_.insert_to_ack.observe(
                std::max(0.0, (now_ms - static_cast<double>(row.created_at_ms)) / 1000));
          }
          break;
        case DeliveryOutcome::permanent_failure:
          ++totals_.dead;
          metrics_.permanent_errors.increment();
          pipeline_log()->warn("event=row_parked_dead id={} reason=\"{}\"", report.id.value,
                               printable(report.error));
          break;
        case DeliveryOutcome::retriable_failure:
          ++totals_.retried;
          metrics_.retriable_errors.increment();
          break;
        case DeliveryOutcome::not_attempted:
          break;
      }
    }
  }

  /// This instance may no longer own its lanes (its heartbeat was late, or another instance took
  /// it for dead): nothing more is produced for them. What librdkafka still queues is purged; what
  /// it already sent cannot be recalled, and what was acknowledged but not recorded will be
  /// published again by the lanes' next owner. The session, and with it every lane lock, is
  /// dropped; the next step reconnects, renews and takes a fair share again.
  void fence_if_lease_ran_out() {
    if (owned_lanes_ > 0 && Clock::now() >= lease_valid_until_) {
      fence("the heartbeat was not renewed within relay.lease_timeout_ms");
    }
  }

  /// The accounting of what may still reach Kafka for lanes another instance may own by now: every
  /// batch not yet handed to the recorder, after the purge. Rows acknowledged and rows sent but
  /// not acknowledged are the bound on copies of this instance's that can land after the next
  /// owner's; everything else was purged unsent.
  void fence(const std::string& why) {
    std::size_t unrecorded_deliveries = 0;
    std::size_t in_doubt = 0;
    // exactly_once: the open transaction is aborted and the producer replaced; whatever it still
    // sends belongs to an aborted transaction, and the lanes' next owner fences its id anyway.
    abandon_open_transaction(why);
    if (publisher_) publisher_->drain(milliseconds(0));
    window_.any_batch([&](const PublishBatch& batch) {
      for (const DeliveryReport& report : batch.reports()) {
        if (report.outcome == DeliveryOutcome::delivered) ++unrecorded_deliveries;
        if (report.outcome != DeliveryOutcome::delivered && report.possibly_persisted) ++in_doubt;
      }
      return false;
    });
    pipeline_log()->error(
        "event=lease_lost_self_fenced reason=\"{}\" lanes={} in_flight_batches={} "
        "acknowledged_not_recorded={} sent_not_acknowledged={} effect=\"produces nothing more "
        "for these lanes; the next owner publishes what is not recorded again\"",
        printable(why), owned_lanes_, window_.size(), unrecorded_deliveries, in_doubt);
    metrics_.fenced.increment();
    metrics_.fenced_unrecorded.increment(unrecorded_deliveries);
    metrics_.fenced_in_doubt.increment(in_doubt);
    store_.disconnect();
    // exactly_once: the lanes' next owner fences this producer; the next generation starts clean.
    discard_transactional_publisher("lease lost: " + why);
    owned_lanes_ = 0;
    owned_lane_ids_.clear();
    unrecovered_lanes_.clear();
    readiness_.lanes_owned = 0;
    metrics_.lanes_owned.set(0);
    lease_valid_until_ = Clock::now();
    caught_up_ = false;
  }

  void replace_publisher() {
    pipeline_log()->error("event=producer_fatal error=\"{}\" action=recreate_producer",
                          printable(publisher_->fatal_error()));
    if (exactly_once()) {
      abandon_open_transaction("the producer failed: " + publisher_->fatal_error());
      discard_transactional_publisher("fatal producer error");
      return;
    }
    // Every message still queued is purged and reported as a retriable failure, so the rows stay
    // pending and are re-published by the new producer (with a new producer id) in id order.
    publisher_->drain(milliseconds(0));
    // Recorded before the new producer starts, so keys held for dead rows stay held until those
    // rows are dead in the database, where the claim sees them.
    record_everything_finished(Clock::now() + kStopCheckInterval * 50);
    publisher_ = make_publisher();
  }

  /// After a drain every row is final: records them all, until `deadline`.
  void record_everything_finished(Clock::time_point deadline) {
    hold_failed_topics();
    while (!nothing_in_flight() && Clock::now() < deadline) {
      record_completed_batches();
      recorder_.wait_idle(kStopCheckInterval);
    }
    finish_recorded_batches();
  }

  /// Adaptive polling, decided when a claim reaches the end of the backlog: the next look is soon
  /// when rows came since the last one, and twice as far each time none did, up to
  /// poll_interval_ms.
  void schedule_next_look() {
    poll_wait_ = found_rows_since_look_ ? config_.relay.poll_interval_min
                                        : std::min(poll_wait_ * 2, config_.relay.poll_interval);
    found_rows_since_look_ = false;
    next_look_ = Clock::now() + poll_wait_;
  }

  void wait_for_work() {
    const auto now = Clock::now();
    // Claiming is blocked for another reason than a caught-up backlog (a lease, the window): the
    // poll wait still paces the loop.
    const auto look = next_look_ > now ? next_look_ : now + poll_wait_;
    auto deadline = std::min(next_rebalance_, look);
    // A held topic's retry is due: look again then. Stalled batches are served by the poll.
    if (const auto retry = holds_.next_retry()) deadline = std::min(deadline, *retry);
    if (window_.stalled() > 0) deadline = std::min(deadline, Clock::now() + kStopCheckInterval);
    while (!stop_.stop_requested()) {
      const auto now = Clock::now();
      if (now >= deadline) break;
      // Rounded up: a wait cut a millisecond short would wake once more for nothing.
      const auto left = std::chrono::ceil<milliseconds>(deadline - now);
      if (store_.wait_for_wakeup(left, stop_event_.fd())) break;
    }
    caught_up_ = false;
  }

  void serve_deliveries_for(milliseconds duration) {
    const auto deadline = Clock::now() + duration;
    while (!stop_.stop_requested() && Clock::now() < deadline) {
      if (publisher_) {
        publisher_->poll(std::min(kStopCheckInterval, duration));
      } else {
        pollfd stop{stop_event_.fd(), POLLIN, 0};
        poll(&stop, 1, static_cast<int>(std::min(kStopCheckInterval, duration).count()));
      }
    }
  }

  void probe_kafka_if_due() {
    metrics_.in_flight_batches.set(static_cast<double>(window_.size() + open_batches_.size()));
    if (!publisher_) return;
    metrics_.producer_queue.set(publisher_->queue_length());
    const auto now = Clock::now();
    if (now < next_kafka_probe_) return;
    next_kafka_probe_ = now + kKafkaProbeInterval;
    readiness_.kafka = publisher_->broker_reachable(kKafkaProbeTimeout);
  }

  void log_progress_if_due() {
    const auto now = Clock::now();
    if (now < next_progress_log_) return;
    next_progress_log_ = now + kProgressLogInterval;
    auto ms = [](Clock::duration duration) {
      return std::chrono::duration_cast<milliseconds>(duration).count();
    };
    pipeline_log()->info(
        "event=progress published_total={} dead_total={} retried_total={} in_flight_batches={} "
        "stalled_batches={} topics_held={} lanes_owned={} producer_queue={} claim_ms={} "
        "produce_ms={} await_kafka_ms={} record_ms={}",
        totals_.published, totals_.dead, totals_.retried, window_.chained(), window_.stalled(),
        holds_.held().size(), owned_lanes_, publisher_ ? publisher_->queue_length() : 0,
        ms(stage_times_.claim), ms(stage_times_.produce), ms(stage_times_.await_kafka),
        ms(recorder_.take_busy_time()));
    stage_times_ = {};
  }

  void shut_down() {
    pipeline_log()->info("event=stopping in_flight_batches={} stalled_batches={}",
                         window_.chained(), window_.stalled());
    // exactly_once: the open transaction is aborted (its rows stay pending); the committed one
    // in the window is recorded below.
    abandon_open_transaction("stopping");
    const auto deadline = Clock::now() + config_.relay.shutdown_timeout;
    auto record_until_deadline = [&] {
      try {
        record_completed_batches();
        recorder_.wait_idle(kDeliveryPollInterval);
        finish_recorded_batches();
        return true;
      } catch (const StoreUnavailable& error) {
        pipeline_log()->warn(
            "event=outcomes_not_recorded batches={} error=\"{}\" effect=delivered rows stay "
            "pending and are published again by the next run",
            window_.size(), printable(error.what()));
        return false;
      }
    };
    // Stalled batches are not waited for: their topics do not acknowledge.
    while (window_.chained() > 0 && Clock::now() < deadline) {
      if (publisher_) publisher_->poll(kDeliveryPollInterval);
      if (!record_until_deadline()) break;
    }
    if (publisher_) publisher_->drain(milliseconds(0));  // what is undelivered stays pending
    while (!nothing_in_flight() && Clock::now() < deadline && record_until_deadline()) {
    }
    release_lanes_recorded();
    pipeline_log()->info("event=stopped published_total={} dead_total={}", totals_.published,
                         totals_.dead);
  }

  const Config& config_;
  const Failpoints failpoints_;
  int batches_produced_ = 0;
  int commits_attempted_ = 0;
  Readiness& readiness_;
  LoopMetrics metrics_;
  MetricsRegistry& registry_;
  std::stop_token stop_;
  StopEvent stop_event_{stop_};  // ends the idle wait at once when a stop is requested
  OutboxStore store_;
  // Batches are declared before the publisher so the publisher, whose callbacks point into them,
  // is destroyed first.
  DeadKeyHolds dead_keys_{config_.relay.dead_key_policy};  // outlives every publisher
  InFlightWindow<PublishBatch> window_;
  /// exactly_once: the batches produced in the open transaction, not committed.
  std::vector<std::unique_ptr<PublishBatch>> open_batches_;
  std::unique_ptr<KafkaPublisher> publisher_;
  // After the batches, so its thread, which reads their reports, stops first.
  OutcomeRecorder recorder_;
  Backoff store_backoff_;
  TopicHolds holds_;
  const ClaimLimits limits_;
  std::vector<OutboxId> in_flight_ids_;
  bool caught_up_ = false;
  bool found_rows_since_look_ = false;
  milliseconds poll_wait_ = config_.relay.poll_interval;
  Clock::time_point next_look_ = Clock::now();  ///< when a caught-up loop claims again
  bool releasing_lanes_ = false;
  std::size_t owned_lanes_ = 0;
  Clock::time_point next_rebalance_ = Clock::now();
  Clock::time_point lease_valid_until_ = Clock::now();  ///< set by each heartbeat (rebalance)
  Clock::time_point next_hold_check_ = Clock::now();
  Clock::time_point next_progress_log_ = Clock::now() + kProgressLogInterval;
  Clock::time_point next_kafka_probe_ = Clock::now();
  Totals totals_;
  StageTimes stage_times_;
  // exactly_once
  std::string database_identity_;
  bool marker_topic_ready_ = false;
  int generation_ = 1;
  std::string transactional_id_;    ///< of the current publisher
  std::int64_t committed_seq_ = 0;  ///< the current publisher's last committed transaction
  std::vector<LaneId> owned_lane_ids_;
  std::vector<LaneId> unrecovered_lanes_;  ///< taken, not yet recovered: nothing is claimed
  std::set<std::string> fenced_ids_;       ///< producers this instance has fenced
  /// The committed batches in the window and their transactions, by their reports.
  std::map<const DeliveryReport*, LaneCommit> commits_;
};

}  // namespace

RelayLoop::RelayLoop(const Config& config, Telemetry& telemetry, Failpoints failpoints)
    : config_(config), telemetry_(telemetry), failpoints_(failpoints) {}

void RelayLoop::run(std::stop_token stop) {
  LoopState state(config_, telemetry_, failpoints_, std::move(stop));
  state.run();
}

}  // namespace outbox
