// Uplink: the agent's one Ingest stream to the server, delivering the spool exactly once.
//
// Contract:
//  - One background thread keeps one stream open: AgentHello (host identity, spool epoch, last
//    acked seq), then the spooled batches in seq order, at most `window` unacknowledged at a
//    time. HelloAck.durable_seq says where to resume; every Ack deletes the batches it covers
//    from the spool. Nothing is deleted that the server has not acknowledged.
//  - A batch the server refuses permanently (INVALID_BATCH, TOO_LARGE) is deleted and counted;
//    a transient refusal (RESOURCE_EXHAUSTED, UNAVAILABLE) or a broken stream reconnects after an
//    exponential backoff with jitter and resends from the server's durable seq. Identity errors
//    (PERMISSION_DENIED_HOST, UNKNOWN_HOST) back off at the ceiling and are logged.
//  - TLS or mTLS come from the options; plaintext only with allow_plaintext. Keepalive pings
//    detect a dead peer; the hello has a deadline.
//  - Never blocks its callers: Nudge() only wakes the thread.
#ifndef FLEETPMU_AGENT_UPLINK_UPLINK_H_
#define FLEETPMU_AGENT_UPLINK_UPLINK_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/spool/spool.h"
#include "fleetpmu/v1/telemetry.pb.h"

namespace fleetpmu::agent {

struct UplinkOptions {
  std::string server_address;  // "host:port" or "unix:/path"
  bool allow_plaintext = false;
  std::string ca_file;         // TLS when any of the TLS fields is set
  std::string cert_file;       // with key_file: mTLS
  std::string key_file;
  std::string server_name;     // overrides the TLS target name
  std::string host_id;
  std::string agent_version;
  v1::HostInfo host_info;
  std::chrono::milliseconds backoff_min{200};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds hello_timeout{10000};
  size_t window = 16;          // batches in flight
  uint64_t jitter_seed = 0;    // 0 = random
};

struct UplinkCounters {
  std::atomic<uint64_t> batches_sent{0};
  std::atomic<uint64_t> batches_acked{0};
  std::atomic<uint64_t> batches_replayed{0};  // sent again after a reconnect
  std::atomic<uint64_t> batches_rejected{0};  // permanently refused by the server
  std::atomic<uint64_t> connects{0};          // streams that got a HelloAck
  std::atomic<uint64_t> reconnects{0};        // attempts after the first
  std::atomic<uint64_t> durable_seq{0};       // highest seq the server acknowledged
  std::atomic<bool> connected{false};
};

class Uplink {
 public:
  static absl::StatusOr<std::unique_ptr<Uplink>> Start(UplinkOptions options, Spool* spool);
  ~Uplink();  // Shutdown()
  Uplink(const Uplink&) = delete;
  Uplink& operator=(const Uplink&) = delete;

  // New batches are in the spool.
  void Nudge();
  // Ends the stream and the thread; idempotent.
  void Shutdown();
  const UplinkCounters& counters() const;

 private:
  struct Impl;
  explicit Uplink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetpmu::agent

#endif  // FLEETPMU_AGENT_UPLINK_UPLINK_H_
