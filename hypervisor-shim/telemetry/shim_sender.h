// ShimSender: ships TelemetryReports to fleetpmu-agent over ShimTelemetry.Publish on a unix
// socket (shim_telemetry.proto), exactly once as far as the agent's acks allow.
//
// What it promises:
//   * Submit() never blocks: it moves the report into a bounded single-producer ring
//     (spsc_ring.h) and wakes the sender thread. A full ring refuses the report; that is a drop.
//   * The sender thread owns the connection. Per stream it sends a ShimHello (shim_id,
//     shim_epoch, backend, HostInfo), waits for the agent's first ShimAck (which says what the
//     agent already has), then sends every buffered report with a higher seq, then each new
//     report as it arrives. seq numbers the reports of this sender: 1, 2, 3, ... in Submit
//     order, unchanged across reconnects (shim_telemetry.proto "Sequence rules").
//   * Reports stay in a bounded resend buffer until a cumulative ShimAck covers them. When the
//     buffer is full the oldest unacked report goes (the agent may be gone for good, and fresh
//     data is worth more); that is a drop too, and the agent sees a gap in seq. The ring between
//     Submit and the sender thread can only refuse the newest report, but the sender thread
//     empties it whenever it runs, connected or not, so a backlog builds in the resend buffer. Drops (DROP_STAGE_SHIM_SEND: reports and their serialized bytes) are
//     collected with TakeDrops() so that the next report can carry them.
//   * On a stream failure (agent gone, stream cancelled, no first ack within
//     handshake_timeout) it reconnects with exponential backoff from backoff_min, doubling up to
//     backoff_max, reset after every successful handshake, and resends what was not acked.
//   * Flush(timeout) waits until every submitted report has been acked (or dropped); Stop()
//     ends the thread promptly, cancelling a stream in progress. The destructor calls Stop().
//
// Threads: Submit and TakeDrops belong to one producer thread (the simulation thread). Start,
// Flush, Stop and stats may be called from any thread, but Start and Stop not concurrently with
// each other. Internally: one sender thread, plus one reader thread per open stream for acks.
//
// grpcpp stays out of this header (pimpl): code that submits reports does not compile gRPC.
#ifndef FLEETPMU_HYPERVISOR_SHIM_TELEMETRY_SHIM_SENDER_H_
#define FLEETPMU_HYPERVISOR_SHIM_TELEMETRY_SHIM_SENDER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "fleetpmu/v1/shim_telemetry.pb.h"
#include "fleetpmu/v1/telemetry.pb.h"

namespace fleetpmu::telemetry {

struct ShimSenderOptions {
  // Filesystem path of the agent's socket (ShimConfig.agent_socket); dialled as "unix:<path>".
  std::string agent_socket;
  // ShimHello fields. shim_epoch must be non-zero and new for every process (NewShimEpoch()).
  std::string shim_id;
  uint64_t shim_epoch = 0;
  v1::Backend backend = v1::BACKEND_SIM;
  v1::HostInfo host_info;
  // Reports between Submit and the sender thread (the ring).
  size_t queue_capacity = 16;
  // Reports kept until acked. At the default 10 s interval, 256 reports are 42 minutes of agent
  // outage.
  size_t resend_capacity = 256;
  std::chrono::milliseconds backoff_min{50};
  std::chrono::milliseconds backoff_max{2000};
  // How long the agent has to answer a ShimHello with its first ShimAck.
  std::chrono::milliseconds handshake_timeout{5000};
  // Connection events ("connected to ...", "stream to ... failed: ..."), one line each, from the
  // sender thread. Empty = silent.
  std::function<void(const std::string&)> log;
};

struct ShimSenderStats {
  uint64_t submitted = 0;         // reports accepted by Submit
  uint64_t dropped = 0;           // reports refused by Submit or pushed out of the resend buffer
  uint64_t sent = 0;              // first transmissions
  uint64_t resent = 0;            // transmissions after a reconnect of a report sent before
  uint64_t acked_seq = 0;         // highest seq the agent has acked
  uint64_t last_seq = 0;          // highest seq assigned
  uint64_t handshakes = 0;        // streams that got their first ShimAck
  uint64_t stream_failures = 0;   // streams that ended other than by Stop
  bool connected = false;         // a stream is open and past its handshake
  std::string last_error;         // why the last stream failed
};

class ShimSender {
 public:
  explicit ShimSender(ShimSenderOptions options);
  ~ShimSender();
  ShimSender(const ShimSender&) = delete;
  ShimSender& operator=(const ShimSender&) = delete;

  // Starts the sender thread. Reports submitted before Start wait in the ring.
  void Start();

  // Producer thread. Takes the report for sending; false if the ring was full (counted as a
  // drop). Never blocks.
  bool Submit(v1::TelemetryReport report);

  // Producer thread. Drops since the last call (DROP_STAGE_SHIM_SEND).
  struct Drops {
    uint64_t count = 0;
    uint64_t bytes = 0;
  };
  Drops TakeDrops();

  // Waits until every report submitted so far has been acked or dropped, or `timeout` passes.
  // True when nothing submitted is outstanding.
  bool Flush(std::chrono::milliseconds timeout);

  // Stops the sender thread (idempotent). Unacked reports are abandoned.
  void Stop();

  ShimSenderStats stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// A random non-zero 64-bit shim_epoch for this process life.
uint64_t NewShimEpoch();

}  // namespace fleetpmu::telemetry

#endif  // FLEETPMU_HYPERVISOR_SHIM_TELEMETRY_SHIM_SENDER_H_
