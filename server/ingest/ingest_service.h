// IngestService: the server side of fleetpmu.v1.Ingest.Stream (proto/fleetpmu/v1/ingest.proto;
// the protocol is docs/proto.md "Exactly once, agent to server"; what this server does at each
// step is docs/server.md "Ingest").
//
// Contract:
//   * One bidi stream per agent: AgentHello -> HelloAck{durable_seq} from storage; then for
//     each Batch: validate (BatchValidator) -> storage commit -> Ack, in that order, so an Ack
//     never precedes the commit it reports. A replayed seq (<= the durable cursor) is acked
//     and ignored. A bad batch gets IngestError{INVALID_BATCH or TOO_LARGE, reason}, its seq
//     is recorded and acked, and the stream stays open.
//   * Bounded: at most max_in_flight_per_stream batches of a stream are between "read" and
//     "acked"; while the window is full the stream reads nothing more, so gRPC flow control
//     pushes back on the agent; reading also pauses while 2 * max_in_flight_per_stream + 2
//     answers wait to be sent (an agent that does not read its acks). A full storage queue or
//     the per-stream rate limit answers IngestError RESOURCE_EXHAUSTED (cursor not moved; the
//     agent resends from that seq, and later seqs are refused until it does). A failed commit
//     answers UNAVAILABLE the same way. At most max_streams streams are open.
//   * Identity: a verified client certificate names the host (security/peer_identity.h); a
//     hello or report naming another host is refused with PERMISSION_DENIED_HOST and the
//     stream closes with PERMISSION_DENIED. With identity_from_certificate (mTLS required), a
//     stream without a certificate is UNAUTHENTICATED.
//   * Threads: callbacks run on gRPC's threads and on the storage writer thread. The service
//     must outlive its gRPC server (shut the server down first) and the Storage must outlive
//     both, since in-flight commits complete into live streams.
//   * No grpcpp in this header: grpc_service() is registered by whoever builds the server.
#ifndef FLEETPMU_SERVER_INGEST_INGEST_SERVICE_H_
#define FLEETPMU_SERVER_INGEST_INGEST_SERVICE_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/time/time.h"
#include "server/ingest/batch_validator.h"
#include "server/ingest/ingest_observer.h"
#include "server/storage/storage.h"

namespace grpc {
class Service;
}  // namespace grpc

namespace fleetpmu::server {

struct IngestOptions {
  ValidationLimits limits;
  // ServerConfig.limits.max_streams.
  uint32_t max_streams = 1024;
  // ServerConfig.limits.per_stream_batches_per_second; burst = 2 s worth (at least 1).
  double batches_per_second = 20;
  // Batches of one stream read but not yet acked.
  uint32_t max_in_flight_per_stream = 8;
  // mTLS required: a stream must present a verified client certificate.
  bool identity_from_certificate = false;
  // Unix ns; default absl::Now().
  std::function<int64_t()> clock;
};

class IngestService {
 public:
  // `storage` and `observer` (may be null) must outlive the service.
  IngestService(Storage* storage, IngestOptions options, IngestObserver* observer);
  ~IngestService();
  IngestService(const IngestService&) = delete;
  IngestService& operator=(const IngestService&) = delete;

  grpc::Service* grpc_service();
  const BatchValidator& validator() const;
  // Streams open now.
  int active_streams() const;

  // For shutdown: cancels every open stream and refuses new ones (UNAVAILABLE). Commits
  // already submitted still complete; their acks may not reach the agent, which resends after
  // reconnecting and is answered as a duplicate. Without this, a gRPC server shutdown would
  // wait its whole grace period for agent streams, which never end by themselves.
  void CloseStreams();
  // After CloseStreams: waits until every stream has ended (its commits included); false if
  // `deadline` came first.
  bool WaitForStreamsClosed(absl::Time deadline);

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_INGEST_INGEST_SERVICE_H_
