#include "server/metrics/metrics_exporter.h"

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <array>
#include <exception>
#include <iterator>
#include <map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace fleetpmu::server {

using fleetpmu::v1::Batch;
using fleetpmu::v1::TelemetryReport;
using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Labels;

namespace {

constexpr double kNsPerSecond = 1e9;

// Swap latencies are a few hundred ns to tens of us (PMU.md section 6).
const Histogram::BucketBoundaries& SwapBuckets() {
  static const Histogram::BucketBoundaries buckets = {1e-7, 2e-7, 5e-7, 1e-6, 2e-6, 5e-6,
                                                      1e-5, 2e-5, 5e-5, 1e-4, 1e-3, 1e-2};
  return buckets;
}

// From a batch written to the agent's spool to its commit here.
const Histogram::BucketBoundaries& LagBuckets() {
  static const Histogram::BucketBoundaries buckets = {0.01, 0.05, 0.1, 0.5, 1,   2,   5,
                                                      10,   30,   60,  300, 900, 3600};
  return buckets;
}

// "OVERFLOW_CLASS_DELIVERED" -> "delivered".
std::string EnumLabel(const std::string& name, absl::string_view prefix) {
  absl::string_view word = name;
  if (absl::StartsWith(word, prefix)) word.remove_prefix(prefix.size());
  return absl::AsciiStrToLower(word);
}

std::string SeriesKey(const Labels& labels) {
  std::string key;
  for (const auto& [name, value] : labels) absl::StrAppend(&key, name, "\x1f", value, "\x1e");
  return key;
}

// A family whose label sets are capped; see the header's "Bounded cardinality".
template <typename T>
class BoundedFamily {
 public:
  BoundedFamily(Family<T>& family, size_t max_series, Counter& rejected)
      : family_(family), max_series_(max_series), rejected_(rejected) {}

  template <typename... Args>
  T* Get(const Labels& labels, Args&&... args) {
    const std::string key = SeriesKey(labels);
    absl::MutexLock lock(&mu_);
    auto it = series_.find(key);
    if (it != series_.end()) return it->second;
    if (series_.size() >= max_series_) {
      rejected_.Increment();
      return nullptr;
    }
    T* metric = &family_.Add(labels, std::forward<Args>(args)...);
    series_.emplace(key, metric);
    return metric;
  }

 private:
  Family<T>& family_;
  const size_t max_series_;
  Counter& rejected_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, T*> series_ ABSL_GUARDED_BY(mu_);
};

void Add(Counter* counter, double value) {
  if (counter != nullptr && value > 0) counter->Increment(value);
}

// Storage series, read when Prometheus scrapes.
class StorageCollector final : public prometheus::Collectable {
 public:
  explicit StorageCollector(const Storage* storage) : storage_(storage) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    if (storage_ == nullptr) return {};
    const StorageStats stats = storage_->Stats();
    std::vector<prometheus::MetricFamily> families;
    auto add = [&](const std::string& name, const std::string& help, prometheus::MetricType type,
                   double value, prometheus::ClientMetric::Label label = {}) {
      if (families.empty() || families.back().name != name) {
        families.push_back(prometheus::MetricFamily{name, help, type, {}});
      }
      prometheus::ClientMetric metric;
      if (!label.name.empty()) metric.label.push_back(label);
      if (type == prometheus::MetricType::Counter) {
        metric.counter.value = value;
      } else {
        metric.gauge.value = value;
      }
      families.back().metric.push_back(metric);
    };
    add("fleetpmu_storage_queue_operations", "Operations waiting for the storage writer.",
        prometheus::MetricType::Gauge, static_cast<double>(stats.queued_ops));
    add("fleetpmu_storage_queue_bytes", "Bytes held by operations waiting for the storage writer.",
        prometheus::MetricType::Gauge, static_cast<double>(stats.queued_bytes));
    add("fleetpmu_storage_queue_full_total",
        "Operations refused because the storage write queue was full (backpressure).",
        prometheus::MetricType::Counter, static_cast<double>(stats.queue_full_refusals));
    add("fleetpmu_storage_transactions_total", "Storage write transactions by result.",
        prometheus::MetricType::Counter, static_cast<double>(stats.transactions_committed),
        {"result", "committed"});
    add("fleetpmu_storage_transactions_total", "Storage write transactions by result.",
        prometheus::MetricType::Counter, static_cast<double>(stats.transactions_failed),
        {"result", "failed"});
    add("fleetpmu_storage_operations_total", "Storage write operations applied.",
        prometheus::MetricType::Counter, static_cast<double>(stats.ops_applied));
    add("fleetpmu_storage_commit_seconds_total", "Time spent in storage write transactions.",
        prometheus::MetricType::Counter, stats.commit_seconds_sum);
    return families;
  }

 private:
  const Storage* storage_;
};

}  // namespace

class MetricsExporter::Impl {
 public:
  Impl(MetricsOptions options, const Storage* storage)
      : options_(options),
        registry_(std::make_shared<prometheus::Registry>()),
        storage_collector_(std::make_shared<StorageCollector>(storage)),
        series_rejected_(prometheus::BuildCounter()
                             .Name("fleetpmu_metrics_series_rejected_total")
                             .Help("Label sets not exported because their family reached its "
                                   "series limit.")
                             .Register(*registry_)),
        streams_(prometheus::BuildGauge()
                     .Name("fleetpmu_ingest_streams")
                     .Help("Open Ingest streams.")
                     .Register(*registry_)
                     .Add({})),
        streams_refused_(prometheus::BuildCounter()
                             .Name("fleetpmu_ingest_streams_refused_total")
                             .Help("Ingest streams refused by limits.max_streams.")
                             .Register(*registry_)
                             .Add({})),
        batches_(prometheus::BuildCounter()
                     .Name("fleetpmu_ingest_batches_total")
                     .Help("Batches received, by result: stored, duplicate (acked, not stored "
                           "again), rejected (permanently), refused (for now).")
                     .Register(*registry_)),
        rejected_(prometheus::BuildCounter()
                      .Name("fleetpmu_ingest_batches_rejected_total")
                      .Help("Batches rejected permanently (INVALID_BATCH, TOO_LARGE), by "
                            "validation rule.")
                      .Register(*registry_)),
        refused_(prometheus::BuildCounter()
                     .Name("fleetpmu_ingest_batches_refused_total")
                     .Help("Batches refused for now (RESOURCE_EXHAUSTED, UNAVAILABLE); the agent "
                           "resends them.")
                     .Register(*registry_)),
        lag_(prometheus::BuildHistogram()
                 .Name("fleetpmu_ingest_lag_seconds")
                 .Help("From a batch's creation in the agent spool to its commit here.")
                 .Register(*registry_)
                 .Add({}, LagBuckets())) {
    for (const char* result : {"stored", "duplicate", "rejected", "refused"}) {
      batch_results_[result] = &batches_.Add({{"result", result}});
    }
    for (size_t i = 0; i < kRejectReasonCount; ++i) {
      rejected_by_reason_[i] =
          &rejected_.Add({{"reason", std::string(RejectReasonName(static_cast<RejectReason>(i)))}});
    }
    for (RefusalReason reason : kAllRefusalReasons) {
      refused_by_reason_[static_cast<size_t>(reason)] =
          &refused_.Add({{"reason", std::string(RefusalReasonName(reason))}});
    }
  }

  // A family of per-vCPU (or per-VM) series with its own cap.
  template <typename T>
  BoundedFamily<T>& Bounded(const std::string& name, Family<T>& family) {
    auto bounded = std::make_unique<BoundedFamily<T>>(family, options_.max_series,
                                                      series_rejected_.Add({{"family", name}}));
    BoundedFamily<T>& ref = *bounded;
    owned_.push_back(std::shared_ptr<void>(
        bounded.release(), [](void* p) { delete static_cast<BoundedFamily<T>*>(p); }));
    return ref;
  }

  BoundedFamily<Counter>& CounterFamily(const std::string& name, const std::string& help) {
    return Bounded(name, prometheus::BuildCounter().Name(name).Help(help).Register(*registry_));
  }
  BoundedFamily<Gauge>& GaugeFamily(const std::string& name, const std::string& help) {
    return Bounded(name, prometheus::BuildGauge().Name(name).Help(help).Register(*registry_));
  }
  BoundedFamily<Histogram>& HistogramFamily(const std::string& name, const std::string& help) {
    return Bounded(name, prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_));
  }

  void Build() {
    loads_ = &CounterFamily("fleetpmu_vcpu_loads_total", "vcpu_load calls (vCPU scheduled).");
    puts_ = &CounterFamily("fleetpmu_vcpu_puts_total", "vcpu_put calls (vCPU descheduled).");
    swaps_ = &CounterFamily("fleetpmu_swaps_total",
                            "Loads and puts by result: done (PMU state swapped) or skipped "
                            "(vCPU FREE).");
    promotions_ = &CounterFamily("fleetpmu_promotions_total", "FREE -> GUEST_OWNED promotions.");
    trapped_ = &CounterFamily("fleetpmu_trapped_fallbacks_total",
                              "Loads that stayed trapped (not partitioned, mismatched pCPU, h=0 "
                              "without HPMN0).");
    swap_duration_ = &HistogramFamily("fleetpmu_swap_duration_seconds",
                                      "Duration of PMU state swaps by phase (load, put).");
    register_accesses_ = &CounterFamily("fleetpmu_swap_register_accesses_total",
                                        "PMU system-register accesses made by swaps.");
    traps_ = &CounterFamily("fleetpmu_pmu_traps_total",
                            "Guest PMU register accesses that trapped, by register.");
    traps_full_exit_ = &CounterFamily("fleetpmu_pmu_traps_full_exit_total",
                                      "Trapped guest PMU accesses that took a full exit to the "
                                      "VMM, by register.");
    host_irqs_ = &CounterFamily("fleetpmu_host_irqs_attributed_total",
                                "Host PMU interrupts whose guest-range flags were attributed to "
                                "the vCPU.");
    virq_ = &CounterFamily("fleetpmu_virtual_irq_assertions_total",
                           "Rising edges of the vCPU's virtual PMU interrupt line.");
    halted_wakes_ = &CounterFamily("fleetpmu_halted_wakes_total",
                                   "Halted vCPUs woken by their virtual PMU interrupt.");
    overflows_ = &CounterFamily("fleetpmu_overflows_total",
                                "Counter wraps by owner kind and class (delivered, coalesced, "
                                "lost, pending).");
    lost_ = &CounterFamily("fleetpmu_overflows_lost_total",
                           "Lost counter wraps by owner kind and reason.");
    misattributed_ = &CounterFamily("fleetpmu_misattributed_flags_total",
                                    "Overflow flags a vCPU saw that another owner caused.");
    run_seconds_ =
        &CounterFamily("fleetpmu_vcpu_run_seconds_total", "Time vCPUs were loaded on a pCPU.");
    invariant_violations_ = &CounterFamily("fleetpmu_invariant_violations_total",
                                           "PMU invariant-checker violations on vCPU switches.");
    guest_counters_ = &GaugeFamily("fleetpmu_vm_guest_counters",
                                   "h: event counters a VM's vCPUs own while loaded.");
    guest_visible_counters_ =
        &GaugeFamily("fleetpmu_vm_guest_visible_counters",
                     "PMCR_EL0.N as the VM's guest read it; differs from h when the guest "
                     "sees the wrong number of counters.");
    pmu_counters_ = &GaugeFamily("fleetpmu_pmu_counters",
                                 "N: event counters of a host's PMU (per PMU id); the host keeps "
                                 "[h,N) while a partitioned vCPU is loaded.");
    host_pcpus_ = &GaugeFamily("fleetpmu_host_pcpus",
                               "pCPUs of a host per PMU id, from its latest HostInfo.");
    ownership_share_ = &GaugeFamily("fleetpmu_ownership_share",
                                    "Fraction of the host's pCPU time in the latest report during "
                                    "which the tenant's vCPUs held counters.");
    host_events_ = &GaugeFamily("fleetpmu_host_events",
                                "Host perf events configured on the host's pCPUs at the end of "
                                "the latest report.");
    host_moved_ = &CounterFamily("fleetpmu_host_events_moved_total",
                                 "Host events moved off [0,h) at partitioned loads.");
    host_squeezed_ = &CounterFamily("fleetpmu_host_events_squeezed_total",
                                    "Host events that found no counter in [h,N) at load.");
    host_enabled_ = &CounterFamily("fleetpmu_host_event_enabled_seconds_total",
                                   "Sum of host perf event enabled time.");
    host_running_ = &CounterFamily("fleetpmu_host_event_running_seconds_total",
                                   "Sum of host perf event running time (running/enabled = "
                                   "multiplexing ratio).");
    dropped_ = &CounterFamily("fleetpmu_telemetry_dropped_total",
                              "Telemetry records dropped by our pipeline, by stage (not lost "
                              "overflows).");
    dropped_bytes_ = &CounterFamily("fleetpmu_telemetry_dropped_bytes_total",
                                    "Bytes of telemetry dropped by our pipeline, by stage.");
    last_report_ = &GaugeFamily("fleetpmu_agent_last_report_timestamp_seconds",
                                "End of the latest stored report interval of the host, Unix "
                                "seconds.");
    reports_ = &CounterFamily("fleetpmu_ingest_reports_total", "TelemetryReports stored.");
  }

  Labels VcpuLabels(const std::string& host, const std::string& tenant, const std::string& vm,
                    absl::string_view vcpu) const {
    Labels labels{{"host", host}, {"tenant", tenant}, {"vm", vm}};
    if (options_.per_vcpu_series) labels["vcpu"] = std::string(vcpu);
    return labels;
  }

  static Labels With(Labels labels, const std::string& name, const std::string& value) {
    labels[name] = value;
    return labels;
  }

  void ObserveLatency(const fleetpmu::v1::LatencyHistogram& histogram, const Labels& labels,
                      const std::string& phase) {
    if (histogram.count() == 0) return;
    Histogram* metric = swap_duration_->Get(With(labels, "phase", phase), SwapBuckets());
    if (metric == nullptr) return;
    const auto& bounds = SwapBuckets();
    std::vector<double> increments(bounds.size() + 1, 0);
    for (int i = 0; i < histogram.bucket_counts_size(); ++i) {
      // A shim bucket lands in the first exporter bucket whose bound covers its upper bound.
      size_t j = bounds.size();
      if (i < histogram.bucket_upper_bounds_ns_size()) {
        const double upper =
            static_cast<double>(histogram.bucket_upper_bounds_ns(i)) / kNsPerSecond;
        j = static_cast<size_t>(std::lower_bound(bounds.begin(), bounds.end(), upper - 1e-15) -
                                bounds.begin());
      }
      increments[j] += static_cast<double>(histogram.bucket_counts(i));
    }
    metric->ObserveMultiple(increments, static_cast<double>(histogram.sum_ns()) / kNsPerSecond);
  }

  void RecordReport(const std::string& host, const TelemetryReport& report) {
    const auto count = [](uint64_t value) { return static_cast<double>(value); };
    for (const fleetpmu::v1::VmInfo& vm : report.vms()) {
      if (Gauge* h = guest_counters_->Get(
              {{"host", host}, {"tenant", vm.tenant_id()}, {"vm", vm.vm_id()}})) {
        h->Set(vm.guest_counters());
      }
      if (vm.has_guest_visible_counters()) {
        if (Gauge* n = guest_visible_counters_->Get(
                {{"host", host}, {"tenant", vm.tenant_id()}, {"vm", vm.vm_id()}})) {
          n->Set(vm.guest_visible_counters());
        }
      }
    }
    for (const fleetpmu::v1::VcpuStats& stats : report.vcpu_stats()) {
      const Labels labels =
          VcpuLabels(host, stats.tenant_id(), stats.vm_id(), absl::StrCat(stats.vcpu()));
      Add(loads_->Get(labels), count(stats.loads()));
      Add(puts_->Get(labels), count(stats.puts()));
      Add(swaps_->Get(With(labels, "result", "done")), count(stats.swaps_done()));
      Add(swaps_->Get(With(labels, "result", "skipped")), count(stats.swaps_skipped()));
      Add(promotions_->Get(labels), count(stats.promotions()));
      Add(trapped_->Get(labels), count(stats.trapped_fallbacks()));
      ObserveLatency(stats.load_latency(), labels, "load");
      ObserveLatency(stats.put_latency(), labels, "put");
      Add(register_accesses_->Get(labels), count(stats.register_accesses()));
      for (const auto& [name, value] : stats.traps_by_register()) {
        Add(traps_->Get(With(labels, "register", name)), count(value));
      }
      for (const auto& [name, value] : stats.traps_full_exit_by_register()) {
        Add(traps_full_exit_->Get(With(labels, "register", name)), count(value));
      }
      Add(host_irqs_->Get(labels), count(stats.host_irqs_attributed()));
      Add(virq_->Get(labels), count(stats.virtual_irq_assertions()));
      Add(halted_wakes_->Get(labels), count(stats.halted_wakes()));
      RecordOverflows(With(labels, "owner_kind", "guest"), stats.overflows(),
                      stats.lost_by_reason());
      Add(misattributed_->Get(labels), count(stats.misattributed()));
      Add(run_seconds_->Get(labels), count(stats.run_time_ns()) / kNsPerSecond);
      Add(invariant_violations_->Get(labels), count(stats.invariant_violations()));
    }
    uint64_t host_events = 0;
    for (const fleetpmu::v1::HostCounterStats& counters : report.host_counters()) {
      host_events += counters.host_events();
      const Labels host_labels{{"host", host}};
      Add(host_moved_->Get(host_labels), count(counters.events_moved_at_load()));
      Add(host_squeezed_->Get(host_labels), count(counters.events_squeezed_at_load()));
      Add(host_enabled_->Get(host_labels), count(counters.enabled_ns()) / kNsPerSecond);
      Add(host_running_->Get(host_labels), count(counters.running_ns()) / kNsPerSecond);
      RecordOverflows(With(VcpuLabels(host, "", "", ""), "owner_kind", "host"),
                      counters.overflows(), counters.lost_by_reason());
    }
    if (report.host_counters_size() > 0) {
      if (Gauge* gauge = host_events_->Get({{"host", host}})) gauge->Set(count(host_events));
    }
    RecordOwnership(host, report);
    for (const fleetpmu::v1::TelemetryDrops& drop : report.drops()) RecordDrop(host, drop);
    if (Gauge* gauge = last_report_->Get({{"host", host}})) {
      const double end = static_cast<double>(report.interval().end_unix_ns()) / kNsPerSecond;
      if (end > gauge->Value()) gauge->Set(end);
    }
    Add(reports_->Get({{"host", host}}), 1);
  }

  void RecordOverflows(
      const Labels& labels, const fleetpmu::v1::OverflowCounts& counts,
      const google::protobuf::RepeatedPtrField<fleetpmu::v1::LostReasonCount>& lost_by_reason) {
    const std::pair<const char*, uint64_t> classes[] = {{"delivered", counts.delivered()},
                                                        {"coalesced", counts.coalesced()},
                                                        {"lost", counts.lost()},
                                                        {"pending", counts.pending()}};
    for (const auto& [name, value] : classes) {
      if (value > 0) Add(overflows_->Get(With(labels, "class", name)), static_cast<double>(value));
    }
    for (const auto& entry : lost_by_reason) {
      Add(lost_->Get(
              With(labels, "reason",
                   EnumLabel(fleetpmu::v1::LostReason_Name(entry.reason()), "LOST_REASON_"))),
          static_cast<double>(entry.count()));
    }
  }

  void RecordDrop(const std::string& host, const fleetpmu::v1::TelemetryDrops& drop) {
    const Labels labels{
        {"host", host},
        {"stage", EnumLabel(fleetpmu::v1::DropStage_Name(drop.stage()), "DROP_STAGE_")}};
    Add(dropped_->Get(labels), static_cast<double>(drop.count()));
    Add(dropped_bytes_->Get(labels), static_cast<double>(drop.bytes()));
  }

  void RecordOwnership(const std::string& host, const TelemetryReport& report) {
    if (report.ownership_size() == 0) return;
    double total = 0;
    std::map<std::string, double> held;
    for (const fleetpmu::v1::OwnershipSample& sample : report.ownership()) {
      const double length =
          static_cast<double>(sample.interval().end_unix_ns() - sample.interval().start_unix_ns());
      total += length;
      std::map<std::string, double> per_tenant;
      for (const auto& residency : sample.residencies()) {
        if (residency.owner_kind() != fleetpmu::v1::OWNER_KIND_GUEST) continue;
        per_tenant[residency.tenant_id()] += static_cast<double>(residency.resident_ns());
      }
      for (const auto& [tenant, ns] : per_tenant) held[tenant] += std::min(ns, length);
    }
    if (total <= 0) return;
    // Tenants seen on the host before and absent now drop to 0. Only exported series are
    // remembered, so this map is bounded like the family.
    absl::MutexLock lock(&tenants_mu_);
    std::map<std::string, Gauge*>& gauges = share_by_host_[host];
    for (const auto& [tenant, ns] : held) {
      if (gauges.count(tenant) != 0) continue;
      if (Gauge* gauge = ownership_share_->Get({{"host", host}, {"tenant", tenant}})) {
        gauges.emplace(tenant, gauge);
      }
    }
    for (const auto& [tenant, gauge] : gauges) {
      auto it = held.find(tenant);
      gauge->Set(it == held.end() ? 0.0 : it->second / total);
    }
  }

  void RecordHostInfo(const std::string& host, const fleetpmu::v1::HostInfo& info) {
    std::map<std::string, double> pcpus_per_pmu;
    for (const fleetpmu::v1::PcpuPmu& pcpu : info.pcpus()) {
      pcpus_per_pmu[pcpu.pmu_id()] += 1;
      if (Gauge* gauge = pmu_counters_->Get({{"host", host}, {"pmu", pcpu.pmu_id()}})) {
        gauge->Set(pcpu.num_counters());
      }
    }
    for (const auto& [pmu, pcpus] : pcpus_per_pmu) {
      if (Gauge* gauge = host_pcpus_->Get({{"host", host}, {"pmu", pmu}})) gauge->Set(pcpus);
    }
  }

  const MetricsOptions options_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<StorageCollector> storage_collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;

  Family<Counter>& series_rejected_;
  Gauge& streams_;
  Counter& streams_refused_;
  Family<Counter>& batches_;
  Family<Counter>& rejected_;
  Family<Counter>& refused_;
  Histogram& lag_;
  std::map<std::string, Counter*> batch_results_;
  std::array<Counter*, kRejectReasonCount> rejected_by_reason_{};
  std::array<Counter*, std::size(kAllRefusalReasons)> refused_by_reason_{};

  std::vector<std::shared_ptr<void>> owned_;
  BoundedFamily<Counter>* loads_ = nullptr;
  BoundedFamily<Counter>* puts_ = nullptr;
  BoundedFamily<Counter>* swaps_ = nullptr;
  BoundedFamily<Counter>* promotions_ = nullptr;
  BoundedFamily<Counter>* trapped_ = nullptr;
  BoundedFamily<Histogram>* swap_duration_ = nullptr;
  BoundedFamily<Counter>* register_accesses_ = nullptr;
  BoundedFamily<Counter>* traps_ = nullptr;
  BoundedFamily<Counter>* traps_full_exit_ = nullptr;
  BoundedFamily<Counter>* host_irqs_ = nullptr;
  BoundedFamily<Counter>* virq_ = nullptr;
  BoundedFamily<Counter>* halted_wakes_ = nullptr;
  BoundedFamily<Counter>* overflows_ = nullptr;
  BoundedFamily<Counter>* lost_ = nullptr;
  BoundedFamily<Counter>* misattributed_ = nullptr;
  BoundedFamily<Counter>* run_seconds_ = nullptr;
  BoundedFamily<Counter>* invariant_violations_ = nullptr;
  BoundedFamily<Gauge>* guest_counters_ = nullptr;
  BoundedFamily<Gauge>* guest_visible_counters_ = nullptr;
  BoundedFamily<Gauge>* pmu_counters_ = nullptr;
  BoundedFamily<Gauge>* host_pcpus_ = nullptr;
  BoundedFamily<Gauge>* ownership_share_ = nullptr;
  BoundedFamily<Gauge>* host_events_ = nullptr;
  BoundedFamily<Counter>* host_moved_ = nullptr;
  BoundedFamily<Counter>* host_squeezed_ = nullptr;
  BoundedFamily<Counter>* host_enabled_ = nullptr;
  BoundedFamily<Counter>* host_running_ = nullptr;
  BoundedFamily<Counter>* dropped_ = nullptr;
  BoundedFamily<Counter>* dropped_bytes_ = nullptr;
  BoundedFamily<Gauge>* last_report_ = nullptr;
  BoundedFamily<Counter>* reports_ = nullptr;

  absl::Mutex tenants_mu_;
  std::map<std::string, std::map<std::string, Gauge*>> share_by_host_ ABSL_GUARDED_BY(tenants_mu_);
};

MetricsExporter::MetricsExporter(MetricsOptions options, const Storage* storage)
    : impl_(std::make_unique<Impl>(options, storage)) {
  impl_->Build();
}

MetricsExporter::~MetricsExporter() = default;

absl::Status MetricsExporter::Serve(const std::string& address) {
  if (impl_->exposer_ != nullptr) return absl::FailedPreconditionError("metrics already served");
  if (absl::StartsWith(address, "unix:")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics_listen \"", address, "\": /metrics needs a host:port, not a unix socket"));
  }
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(address, 2);
    exposer->RegisterCollectable(impl_->registry_);
    exposer->RegisterCollectable(impl_->storage_collector_);
    const std::vector<int> ports = exposer->GetListeningPorts();
    impl_->port_ = ports.empty() ? 0 : ports.front();
    impl_->exposer_ = std::move(exposer);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics_listen \"", address, "\": cannot serve /metrics: ", e.what()));
  }
  return absl::OkStatus();
}

int MetricsExporter::port() const { return impl_->port_; }

std::string MetricsExporter::Render() const {
  std::vector<prometheus::MetricFamily> families = impl_->registry_->Collect();
  for (auto& family : impl_->storage_collector_->Collect()) families.push_back(std::move(family));
  return prometheus::TextSerializer().Serialize(families);
}

void MetricsExporter::StreamOpened() { impl_->streams_.Increment(); }
void MetricsExporter::StreamClosed() { impl_->streams_.Decrement(); }
void MetricsExporter::StreamRefused() { impl_->streams_refused_.Increment(); }

void MetricsExporter::HelloAccepted(const std::string& host_id,
                                    const fleetpmu::v1::HostInfo& info) {
  impl_->RecordHostInfo(host_id, info);
}

void MetricsExporter::BatchStored(const std::string& host_id, const Batch& batch,
                                  int64_t committed_unix_ns) {
  impl_->batch_results_.at("stored")->Increment();
  if (batch.created_unix_ns() > 0 && committed_unix_ns >= batch.created_unix_ns()) {
    impl_->lag_.Observe(static_cast<double>(committed_unix_ns - batch.created_unix_ns()) /
                        kNsPerSecond);
  }
  for (const TelemetryReport& report : batch.reports()) {
    if (report.has_host_info()) impl_->RecordHostInfo(host_id, report.host_info());
    impl_->RecordReport(host_id, report);
  }
  for (const fleetpmu::v1::TelemetryDrops& drop : batch.agent_drops()) {
    impl_->RecordDrop(host_id, drop);
  }
}

void MetricsExporter::BatchDuplicate(const std::string& /*host_id*/) {
  impl_->batch_results_.at("duplicate")->Increment();
}

void MetricsExporter::BatchRejected(const std::string& /*host_id*/, RejectReason reason) {
  impl_->batch_results_.at("rejected")->Increment();
  impl_->rejected_by_reason_[static_cast<size_t>(reason)]->Increment();
}

void MetricsExporter::BatchRefused(const std::string& /*host_id*/, RefusalReason reason) {
  impl_->batch_results_.at("refused")->Increment();
  impl_->refused_by_reason_[static_cast<size_t>(reason)]->Increment();
}

}  // namespace fleetpmu::server
