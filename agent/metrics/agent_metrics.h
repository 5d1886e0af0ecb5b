// AgentMetrics: the agent's self-metrics on a loopback /metrics (Prometheus text format).
//
// Values are read at scrape time from the components' own counters (no second bookkeeping):
// spool depth and bytes, batches sent/acked/replayed/rejected, reconnects, drops, shims
// connected. Names follow DESIGN.md "Metrics": prefix fleetpmu_agent_, counters end in _total.
// prometheus-cpp throws on a bad address or a busy port: Start() turns that into a Status.
#ifndef FLEETPMU_AGENT_METRICS_AGENT_METRICS_H_
#define FLEETPMU_AGENT_METRICS_AGENT_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/intake/shim_intake.h"
#include "agent/spool/spool.h"
#include "agent/uplink/uplink.h"

namespace prometheus {
class Exposer;
}

namespace fleetpmu::agent {

class AgentMetrics {
 public:
  // Serves http://<listen>/metrics. Components may be null (not exported then).
  static absl::StatusOr<std::unique_ptr<AgentMetrics>> Start(const std::string& listen, const std::string& host_id,
                                                             const Spool* spool, const ShimIntake* intake,
                                                             const Uplink* uplink);
  ~AgentMetrics();
  // The port actually bound (for listen addresses with port 0).
  int port() const;

 private:
  class Collector;
  AgentMetrics() = default;
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace fleetpmu::agent

#endif  // FLEETPMU_AGENT_METRICS_AGENT_METRICS_H_
