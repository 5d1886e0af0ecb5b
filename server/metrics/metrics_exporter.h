// MetricsExporter: fleetpmu-server's Prometheus metrics (DESIGN.md "Metrics"; every series is
// listed in docs/server.md "Metrics"), served with prometheus-cpp's pull exposer.
//
// Contract:
//   * It is the IngestObserver of the ingest service: telemetry series move when a batch is
//     committed (never for duplicates or refused batches), ingest series on every stream and
//     batch event. Storage series are read from Storage::Stats() at scrape time.
//   * Names: prefix fleetpmu_, counters end in _total, durations are _seconds histograms.
//     Labels are bounded: host, tenant, vm (and vcpu only with per_vcpu_series), plus closed
//     sets (reason, class, stage, phase, result, owner_kind) and PMU register names.
//   * Bounded cardinality: at most max_series label sets per family; a new label set beyond
//     that is not exported and counted in fleetpmu_metrics_series_rejected_total{family}.
//   * Serve() listens on a "host:port" (port 0 = any free port) and never throws: a
//     prometheus-cpp (civetweb) exception becomes an error Status naming the address.
//   * Thread-safe. The Storage passed in must outlive the exporter.
#ifndef FLEETPMU_SERVER_METRICS_METRICS_EXPORTER_H_
#define FLEETPMU_SERVER_METRICS_METRICS_EXPORTER_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "server/ingest/ingest_observer.h"
#include "server/storage/storage.h"

namespace fleetpmu::server {

struct MetricsOptions {
  // ServerConfig.export_per_vcpu_series: add the vcpu label to per-vCPU families.
  bool per_vcpu_series = false;
  // Label sets per family.
  size_t max_series = 10000;
};

class MetricsExporter final : public IngestObserver {
 public:
  // `storage` (may be null) is read at scrape time for the storage series.
  MetricsExporter(MetricsOptions options, const Storage* storage);
  ~MetricsExporter() override;
  MetricsExporter(const MetricsExporter&) = delete;
  MetricsExporter& operator=(const MetricsExporter&) = delete;

  // Serves GET /metrics on `address`; call at most once.
  absl::Status Serve(const std::string& address);
  // The port Serve() bound (useful with port 0); 0 before Serve().
  int port() const;
  // The exposition text a scrape returns now.
  std::string Render() const;

  // IngestObserver.
  void StreamOpened() override;
  void StreamClosed() override;
  void StreamRefused() override;
  void HelloAccepted(const std::string& host_id, const fleetpmu::v1::HostInfo& info) override;
  void BatchStored(const std::string& host_id, const fleetpmu::v1::Batch& batch,
                   int64_t committed_unix_ns) override;
  void BatchDuplicate(const std::string& host_id) override;
  void BatchRejected(const std::string& host_id, RejectReason reason) override;
  void BatchRefused(const std::string& host_id, RefusalReason reason) override;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_METRICS_METRICS_EXPORTER_H_
