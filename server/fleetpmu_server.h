// FleetpmuServer: everything fleetpmu-server runs, assembled from one validated ServerConfig
// (DESIGN.md "Processes and data flow"; docs/server.md).
//
//   storage   SqliteStorage at storage.sqlite_path, periodic retention
//   ingest    IngestService on ingest_listen (mTLS per tls)
//   query     QueryService on query_listen (TLS per tls, bearer tokens from tokens_file)
//   metrics   MetricsExporter on metrics_listen (/metrics)
// ingest_listen == query_listen serves both on one gRPC server.
//
// Contract:
//   * Start() returns a running server or the first error, naming the config field (a
//     certificate that cannot be read, a port in use, a tokens file line); on error nothing
//     is left running.
//   * Shutdown(grace): refuses new calls, cancels ingest streams at once (their submitted
//     commits complete), lets Query calls in progress finish within `grace`, then closes the
//     listeners; every batch acked before remains committed (acks follow commits), every
//     queued storage operation is applied; then /metrics stops. Idempotent; the destructor
//     calls Shutdown(0).
//   * Thread-safe for Shutdown versus the accessors.
#ifndef FLEETPMU_SERVER_FLEETPMU_SERVER_H_
#define FLEETPMU_SERVER_FLEETPMU_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fleetpmu/v1/config.pb.h"

namespace fleetpmu::server {

// Knobs of the running server that ServerConfig does not carry (fleetpmu-server flags).
struct ServerRuntimeOptions {
  // Batches of one ingest stream between read and ack.
  uint32_t ingest_window = 8;
  // Storage write queue bounds.
  size_t storage_queue_ops = 1024;
  size_t storage_queue_bytes = size_t{256} << 20;
  // Label sets per metric family.
  size_t metrics_max_series = 10000;
  // How often retention runs; zero = never (tests).
  absl::Duration retention_period = absl::Minutes(1);
  // Accepted clock skew of report timestamps.
  absl::Duration max_future_skew = absl::Minutes(5);
  // Unix ns; default absl::Now(). Tests pin it.
  std::function<int64_t()> clock;
  // Where progress lines go ("ingest listening on ..."); default: none.
  std::function<void(const std::string&)> log;
};

class FleetpmuServer {
 public:
  static absl::StatusOr<std::unique_ptr<FleetpmuServer>> Start(
      const fleetpmu::v1::ServerConfig& config, ServerRuntimeOptions options);
  ~FleetpmuServer();
  FleetpmuServer(const FleetpmuServer&) = delete;
  FleetpmuServer& operator=(const FleetpmuServer&) = delete;

  void Shutdown(absl::Duration grace);

  // Bound ports (0 for unix: addresses).
  int ingest_port() const;
  int query_port() const;
  int metrics_port() const;

  class Impl;

 private:
  explicit FleetpmuServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_FLEETPMU_SERVER_H_
