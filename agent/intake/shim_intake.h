// ShimIntake: the agent's ShimTelemetry server on a unix socket.
//
// Contract:
//  - Several shims may publish at once, one stream each. A stream must open with a ShimHello;
//    the intake answers with a ShimAck naming the highest report seq of that (shim_id,
//    shim_epoch) already in the spool, so a reconnecting shim resends only what is missing.
//  - Each report is written to the spool, one batch per report, together with the shim's cursor,
//    before it is acknowledged. A report at or below the cursor is a replay: acked, not stored.
//  - A stream that breaks the rules (no hello first, a second hello, a report without a body,
//    an interval that ends before it starts, more reports per second than allowed, a message over
//    the size bound) is cut off with a logged reason; the other streams go on. The spool refusing
//    a report (full, DROP_NEWEST) leaves it unacknowledged.
//  - The socket file gets `socket_mode` permissions; a stale socket file is replaced.
//
// Thread-safe. Counters are readable at any time.
#ifndef FLEETPMU_AGENT_INTAKE_SHIM_INTAKE_H_
#define FLEETPMU_AGENT_INTAKE_SHIM_INTAKE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/spool/spool.h"
#include "fleetpmu/v1/telemetry.pb.h"

namespace fleetpmu::agent {

struct ShimIntakeOptions {
  std::string socket_path;
  uint32_t socket_mode = 0660;
  int max_message_bytes = 4 << 20;
  uint32_t max_reports_per_second = 100;  // per stream, over a 1 s window
  std::string host_id;                    // written into every report
  v1::HostInfo host_facts;                // the agent's discovery, merged into reports' host_info
};

struct ShimIntakeCounters {
  std::atomic<uint64_t> shims_connected{0};
  std::atomic<uint64_t> streams_total{0};
  std::atomic<uint64_t> reports_spooled{0};
  std::atomic<uint64_t> reports_replayed{0};
  std::atomic<uint64_t> reports_refused{0};   // the spool said no
  std::atomic<uint64_t> streams_cut_off{0};
};

class ShimIntake {
 public:
  // Binds the socket and starts serving. Errors name the socket path.
  static absl::StatusOr<std::unique_ptr<ShimIntake>> Start(ShimIntakeOptions options, Spool* spool);
  ~ShimIntake();  // Shutdown()
  ShimIntake(const ShimIntake&) = delete;
  ShimIntake& operator=(const ShimIntake&) = delete;

  // Stops accepting, ends every stream, waits for handlers; idempotent.
  void Shutdown();
  const ShimIntakeCounters& counters() const;

 private:
  struct Impl;
  explicit ShimIntake(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetpmu::agent

#endif  // FLEETPMU_AGENT_INTAKE_SHIM_INTAKE_H_
