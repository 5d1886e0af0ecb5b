// FakeAgent: the agent's side of ShimTelemetry.Publish (shim_telemetry.proto), for tests of the
// shim's sender and of the fleetpmu-shim binary. The real agent is a later issue.
//
// It behaves like the contract asks of the agent: the first message of a stream must be a
// ShimHello, which it answers with a ShimAck carrying the highest seq it has spooled for that
// epoch; then it "spools" each report whose seq is above that (in memory) and acks it. A report
// at or below the spooled seq is ignored and counted as a duplicate; a seq that skips numbers is
// spooled and counted as a gap.
//
// The spool lives in this object, not in the gRPC server: Stop() and Start() again model an agent
// restart with a durable spool. set_spooling(false) models an agent that reads reports but dies
// before committing them (no spool, no ack); set_acks() one that spools but does not ack
// reports (Acks::kHelloOnly) or does not even answer the hello (Acks::kNone).
//
// Thread-safe. Waits take a timeout and return whether the condition came true.
#ifndef FLEETPMU_TESTS_HYPERVISOR_SHIM_TELEMETRY_FAKE_AGENT_H_
#define FLEETPMU_TESTS_HYPERVISOR_SHIM_TELEMETRY_FAKE_AGENT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fleetpmu/v1/shim_telemetry.pb.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace fleetpmu::telemetry::testing {

class FakeAgent {
 public:
  struct Spooled {
    uint64_t epoch = 0;
    uint64_t seq = 0;
    v1::TelemetryReport report;
  };

  // Serves on unix:<socket_path> once started.
  explicit FakeAgent(std::string socket_path);
  ~FakeAgent();
  FakeAgent(const FakeAgent&) = delete;
  FakeAgent& operator=(const FakeAgent&) = delete;

  // Starts serving (removing a stale socket file first). The spool is kept across Stop/Start.
  absl::Status Start();
  // Stops at once, cancelling open streams (an agent that goes away).
  void Stop();

  enum class Acks { kAll, kHelloOnly, kNone };
  void set_spooling(bool on);
  void set_acks(Acks acks);

  std::vector<Spooled> spooled() const;
  std::vector<v1::ShimHello> hellos() const;
  uint64_t duplicates() const;
  uint64_t gaps() const;
  uint64_t discarded() const;  // reports read while spooling was off

  bool WaitForSpooled(size_t count, absl::Duration timeout) const;
  bool WaitForHellos(size_t count, absl::Duration timeout) const;
  bool WaitForDiscarded(uint64_t count, absl::Duration timeout) const;

 private:
  class Service;
  friend class Service;

  const std::string socket_path_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;  // touched by Start/Stop only

  mutable absl::Mutex mu_;
  mutable absl::CondVar changed_;  // anything below changed
  std::vector<Spooled> spooled_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, uint64_t> spooled_seq_ ABSL_GUARDED_BY(mu_);  // by epoch
  std::vector<v1::ShimHello> hellos_ ABSL_GUARDED_BY(mu_);
  uint64_t duplicates_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t gaps_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t discarded_ ABSL_GUARDED_BY(mu_) = 0;
  bool spooling_ ABSL_GUARDED_BY(mu_) = true;
  Acks acks_ ABSL_GUARDED_BY(mu_) = Acks::kAll;
};

}  // namespace fleetpmu::telemetry::testing

#endif  // FLEETPMU_TESTS_HYPERVISOR_SHIM_TELEMETRY_FAKE_AGENT_H_
