#include "server/fleetpmu_server.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/ingest/ingest_service.h"
#include "server/metrics/metrics_exporter.h"
#include "server/query/query_service.h"
#include "server/security/tls_credentials.h"
#include "server/security/tokens.h"
#include "server/storage/sqlite_storage.h"

namespace fleetpmu::server {
namespace {

constexpr int kMaxQueryThreads = 64;

int64_t Nanos(const google::protobuf::Duration& d) { return d.seconds() * 1000000000 + d.nanos(); }

}  // namespace

class FleetpmuServer::Impl {
 public:
  ~Impl() { Shutdown(absl::ZeroDuration()); }

  void Shutdown(absl::Duration grace) {
    absl::MutexLock lock(&shutdown_mu_);
    if (stopped_) return;
    stopped_ = true;
    const absl::Time deadline = absl::Now() + grace;
    // Agent streams never end by themselves: cancel them (their pending commits complete, so
    // storage must still run here; agents resend what they did not see acked). Query calls
    // in progress get until the deadline; new calls of either service are refused.
    if (ingest_ != nullptr) ingest_->CloseStreams();
    const bool streams_closed = ingest_ == nullptr || ingest_->WaitForStreamsClosed(deadline);
    const bool queries_done = query_ == nullptr || query_->Drain(deadline);
    if (!streams_closed || !queries_done) Log("shutdown grace over: cancelling what is left");
    // Nothing the server needs is running now: close the listeners and connections without
    // gRPC's graceful connection drain (seconds per connected client).
    for (auto& server : grpc_servers_) server->Shutdown(std::chrono::system_clock::now());
    for (auto& server : grpc_servers_) server->Wait();
    grpc_servers_.clear();
    ingest_.reset();
    query_.reset();
    // Everything queued is applied before the writer stops.
    if (storage_ != nullptr) storage_->Shutdown();
    metrics_.reset();
    storage_.reset();
    if (started_) Log("stopped");
  }

  void Log(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

  ServerRuntimeOptions options_;
  std::unique_ptr<SqliteStorage> storage_;
  std::unique_ptr<MetricsExporter> metrics_;
  std::unique_ptr<IngestService> ingest_;
  std::unique_ptr<QueryService> query_;
  std::vector<std::unique_ptr<grpc::Server>> grpc_servers_;
  int ingest_port_ = 0;
  int query_port_ = 0;
  int metrics_port_ = 0;
  bool started_ = false;

  absl::Mutex shutdown_mu_;
  bool stopped_ = false;
};

absl::StatusOr<std::unique_ptr<FleetpmuServer>> FleetpmuServer::Start(
    const fleetpmu::v1::ServerConfig& config, ServerRuntimeOptions options) {
  if (!options.clock) options.clock = [] { return absl::ToUnixNanos(absl::Now()); };
  auto impl = std::make_unique<Impl>();
  impl->options_ = options;
  const fleetpmu::v1::StorageConfig& storage_config = config.storage();

  // Everything that reads files first, so that a bad certificate or tokens file fails fast.
  absl::StatusOr<ListenerCredentials> credentials = MakeListenerCredentials(config);
  if (!credentials.ok()) return credentials.status();
  QueryOptions query_options;
  query_options.clock = options.clock;
  if (!config.tokens_file().empty()) {
    absl::StatusOr<TokenStore> tokens = TokenStore::LoadFile(config.tokens_file());
    if (!tokens.ok()) return tokens.status();
    impl->Log(absl::StrCat("query tokens: ", tokens->size(), " from ", config.tokens_file()));
    query_options.tokens = std::make_shared<const TokenStore>(std::move(*tokens));
  } else {
    impl->Log("query tokens: none, every Query caller is admin (allow_plaintext)");
  }

  SqliteStorageOptions storage_options;
  storage_options.path = storage_config.sqlite_path();
  storage_options.raw_retention_ns = Nanos(storage_config.raw_retention());
  storage_options.rollup_interval_ns = Nanos(storage_config.rollup_interval());
  storage_options.rollup_retention_ns = Nanos(storage_config.rollup_retention());
  storage_options.max_queued_ops = options.storage_queue_ops;
  storage_options.max_queued_bytes = options.storage_queue_bytes;
  storage_options.retention_period = options.retention_period;
  storage_options.clock = options.clock;
  Impl* raw = impl.get();
  storage_options.on_retention = [raw](const absl::StatusOr<RetentionResult>& result) {
    if (!result.ok()) {
      raw->Log(absl::StrCat("retention failed: ", result.status().message()));
    } else if (result->raw_rows_rolled_up > 0 || result->rows_deleted > 0) {
      raw->Log(absl::StrCat("retention: ", result->raw_rows_rolled_up, " rows rolled up, ",
                            result->rows_deleted, " deleted"));
    }
  };
  absl::StatusOr<std::unique_ptr<SqliteStorage>> storage = SqliteStorage::Open(storage_options);
  if (!storage.ok()) {
    return absl::Status(storage.status().code(),
                        absl::StrCat("storage.sqlite_path ", storage_options.path, ": ",
                                     storage.status().message()));
  }
  impl->storage_ = std::move(*storage);
  impl->Log(absl::StrCat("storage: sqlite ", storage_options.path));

  MetricsOptions metrics_options;
  metrics_options.per_vcpu_series = config.export_per_vcpu_series();
  metrics_options.max_series = options.metrics_max_series;
  impl->metrics_ = std::make_unique<MetricsExporter>(metrics_options, impl->storage_.get());
  if (absl::Status served = impl->metrics_->Serve(config.metrics_listen()); !served.ok()) {
    return served;
  }

  IngestOptions ingest_options;
  ingest_options.limits.max_batch_records = config.limits().max_batch_records();
  ingest_options.limits.max_message_bytes = config.limits().max_message_bytes();
  ingest_options.limits.max_age_ns = storage_options.rollup_retention_ns;
  ingest_options.limits.max_future_skew_ns = absl::ToInt64Nanoseconds(options.max_future_skew);
  ingest_options.max_streams = config.limits().max_streams();
  ingest_options.batches_per_second = config.limits().per_stream_batches_per_second();
  ingest_options.max_in_flight_per_stream = options.ingest_window;
  ingest_options.identity_from_certificate = credentials->identity_from_certificate;
  ingest_options.clock = options.clock;
  impl->ingest_ =
      std::make_unique<IngestService>(impl->storage_.get(), ingest_options, impl->metrics_.get());
  impl->query_ = std::make_unique<QueryService>(impl->storage_.get(), std::move(query_options));

  // Messages up to max_message_bytes are validated (TOO_LARGE names the batch); the
  // transport refuses beyond twice that, where the stream fails as a whole.
  const int max_receive = static_cast<int>(
      std::min<int64_t>(int64_t{2} * config.limits().max_message_bytes(), INT32_MAX));
  auto build = [&](const std::string& address,
                   const std::shared_ptr<grpc::ServerCredentials>& creds, bool ingest, bool query,
                   int* port) -> absl::Status {
    grpc::ServerBuilder builder;
    // A second server on a busy port must fail, not share it (gRPC's default SO_REUSEPORT).
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.AddListeningPort(address, creds, port);
    builder.SetMaxReceiveMessageSize(
        ingest ? max_receive : static_cast<int>(config.limits().max_message_bytes()));
    if (ingest) builder.RegisterService(impl->ingest_->grpc_service());
    if (query) {
      builder.RegisterService(impl->query_->grpc_service());
      // Query calls run on gRPC's synchronous thread pool: bound it (beyond: RESOURCE_EXHAUSTED).
      grpc::ResourceQuota quota("fleetpmu-query");
      quota.SetMaxThreads(kMaxQueryThreads);
      builder.SetResourceQuota(quota);
    }
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (server == nullptr) {
      return absl::UnavailableError(
          absl::StrCat(ingest ? "ingest_listen" : "query_listen", " \"", address,
                       "\": cannot listen (address in use, or not a valid host:port / unix:path)"));
    }
    impl->grpc_servers_.push_back(std::move(server));
    return absl::OkStatus();
  };
  const std::string transport =
      !config.has_tls()
          ? "plaintext"
          : (credentials->identity_from_certificate ? "mTLS, host_id from the client certificate"
                                                    : "TLS");
  if (config.ingest_listen() == config.query_listen()) {
    if (absl::Status status =
            build(config.ingest_listen(), credentials->shared, true, true, &impl->ingest_port_);
        !status.ok()) {
      return status;
    }
    impl->query_port_ = impl->ingest_port_;
  } else {
    if (absl::Status status =
            build(config.ingest_listen(), credentials->ingest, true, false, &impl->ingest_port_);
        !status.ok()) {
      return status;
    }
    if (absl::Status status =
            build(config.query_listen(), credentials->query, false, true, &impl->query_port_);
        !status.ok()) {
      return status;
    }
  }
  impl->Log(absl::StrCat("ingest listening on ", config.ingest_listen(), " port ",
                         impl->ingest_port_, " (", transport, ")"));
  impl->Log(absl::StrCat("query listening on ", config.query_listen(), " port ", impl->query_port_,
                         " (", config.has_tls() ? "TLS" : "plaintext", ", bearer tokens)"));
  impl->metrics_port_ = impl->metrics_->port();
  impl->Log(absl::StrCat("metrics on http://", config.metrics_listen(), "/metrics port ",
                         impl->metrics_port_));
  impl->started_ = true;
  return std::unique_ptr<FleetpmuServer>(new FleetpmuServer(std::move(impl)));
}

FleetpmuServer::FleetpmuServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FleetpmuServer::~FleetpmuServer() = default;

void FleetpmuServer::Shutdown(absl::Duration grace) { impl_->Shutdown(grace); }

int FleetpmuServer::ingest_port() const { return impl_->ingest_port_; }
int FleetpmuServer::query_port() const { return impl_->query_port_; }
int FleetpmuServer::metrics_port() const { return impl_->metrics_port_; }

}  // namespace fleetpmu::server
