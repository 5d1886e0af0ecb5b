#include "agent/metrics/agent_metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include <exception>
#include <vector>

#include "absl/strings/str_cat.h"

namespace fleetpmu::agent {
namespace {

prometheus::MetricFamily Family(const std::string& name, const std::string& help, prometheus::MetricType type,
                                double value, const std::string& host_id) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  m.label.push_back({"host", host_id});
  if (type == prometheus::MetricType::Counter) m.counter.value = value;
  else m.gauge.value = value;
  f.metric.push_back(std::move(m));
  return f;
}

}  // namespace

class AgentMetrics::Collector final : public prometheus::Collectable {
 public:
  Collector(std::string host_id, const Spool* spool, const ShimIntake* intake, const Uplink* uplink)
      : host_id_(std::move(host_id)), spool_(spool), intake_(intake), uplink_(uplink) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    using prometheus::MetricType;
    std::vector<prometheus::MetricFamily> out;
    auto add = [&](const char* name, const char* help, MetricType type, double v) {
      out.push_back(Family(name, help, type, v, host_id_));
    };
    if (spool_ != nullptr) {
      const SpoolStats s = spool_->stats();
      add("fleetpmu_agent_spool_batches", "Batches in the spool waiting for the server's ack.", MetricType::Gauge,
          static_cast<double>(s.batches));
      add("fleetpmu_agent_spool_bytes", "Serialized bytes in the spool.", MetricType::Gauge, static_cast<double>(s.bytes));
      add("fleetpmu_agent_spool_dropped_batches_total", "Batches the full spool dropped.", MetricType::Counter,
          static_cast<double>(s.dropped_batches));
    }
    if (intake_ != nullptr) {
      const ShimIntakeCounters& c = intake_->counters();
      add("fleetpmu_agent_shims_connected", "Shim streams open now.", MetricType::Gauge,
          static_cast<double>(c.shims_connected.load()));
      add("fleetpmu_agent_shim_reports_spooled_total", "Shim reports written to the spool.", MetricType::Counter,
          static_cast<double>(c.reports_spooled.load()));
      add("fleetpmu_agent_shim_reports_replayed_total", "Shim reports resent after a reconnect and ignored.",
          MetricType::Counter, static_cast<double>(c.reports_replayed.load()));
      add("fleetpmu_agent_shim_reports_refused_total", "Shim reports the full spool refused.", MetricType::Counter,
          static_cast<double>(c.reports_refused.load()));
      add("fleetpmu_agent_shim_streams_cut_off_total", "Shim streams ended for breaking the protocol.",
          MetricType::Counter, static_cast<double>(c.streams_cut_off.load()));
    }
    if (uplink_ != nullptr) {
      const UplinkCounters& c = uplink_->counters();
      add("fleetpmu_agent_batches_sent_total", "Batches sent to the server.", MetricType::Counter,
          static_cast<double>(c.batches_sent.load()));
      add("fleetpmu_agent_batches_acked_total", "Batches the server acknowledged.", MetricType::Counter,
          static_cast<double>(c.batches_acked.load()));
      add("fleetpmu_agent_batches_replayed_total", "Batches sent again after a reconnect.", MetricType::Counter,
          static_cast<double>(c.batches_replayed.load()));
      add("fleetpmu_agent_batches_rejected_total", "Batches the server refused permanently.", MetricType::Counter,
          static_cast<double>(c.batches_rejected.load()));
      add("fleetpmu_agent_reconnects_total", "Ingest stream reconnect attempts.", MetricType::Counter,
          static_cast<double>(c.reconnects.load()));
      add("fleetpmu_agent_connected", "1 while the ingest stream is up.", MetricType::Gauge,
          c.connected.load() ? 1.0 : 0.0);
    }
    return out;
  }

 private:
  std::string host_id_;
  const Spool* spool_;
  const ShimIntake* intake_;
  const Uplink* uplink_;
};

AgentMetrics::~AgentMetrics() = default;

absl::StatusOr<std::unique_ptr<AgentMetrics>> AgentMetrics::Start(const std::string& listen, const std::string& host_id,
                                                                  const Spool* spool, const ShimIntake* intake,
                                                                  const Uplink* uplink) {
  std::unique_ptr<AgentMetrics> m(new AgentMetrics());
  m->collector_ = std::make_shared<Collector>(host_id, spool, intake, uplink);
  try {
    m->exposer_ = std::make_unique<prometheus::Exposer>(listen);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", listen, ": ", e.what()));
  }
  m->exposer_->RegisterCollectable(m->collector_);
  return m;
}

int AgentMetrics::port() const {
  const std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

}  // namespace fleetpmu::agent
