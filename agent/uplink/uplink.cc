#include "agent/uplink/uplink.h"

#include <grpcpp/grpcpp.h>

#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fleetpmu/v1/ingest.grpc.pb.h"

namespace fleetpmu::agent {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("uplink: cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

struct Uplink::Impl {
  UplinkOptions options;
  Spool* spool = nullptr;
  UplinkCounters counters;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::thread thread;
  std::mt19937_64 rng;

  absl::Mutex mu;
  bool stop ABSL_GUARDED_BY(mu) = false;
  bool nudged ABSL_GUARDED_BY(mu) = false;
  grpc::ClientContext* live_context ABSL_GUARDED_BY(mu) = nullptr;

  // Acks and errors seen by one session's reader.
  struct Window {
    absl::Mutex mu;
    uint64_t acked = 0;
    bool broken = false;
    bool transient = false;
    bool Ended() const { return broken || transient; }
  };

  uint64_t highest_ever_sent = 0;  // replay accounting across sessions

  bool StopOrNudge() const ABSL_SHARED_LOCKS_REQUIRED(mu) { return stop || nudged; }
  void Run();
  // One stream's life. Returns how long to back off before the next (zero = at once).
  absl::Duration Session(bool* fatal);
  bool Stopping() {
    absl::MutexLock lock(&mu);
    return stop;
  }
};

Uplink::Uplink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Uplink::~Uplink() { Shutdown(); }

absl::StatusOr<std::unique_ptr<Uplink>> Uplink::Start(UplinkOptions options, Spool* spool) {
  auto impl = std::make_unique<Impl>();
  const bool tls = !options.ca_file.empty() || !options.cert_file.empty();
  if (!tls && !options.allow_plaintext) {
    return absl::FailedPreconditionError("uplink: no TLS configured and allow_plaintext is off");
  }
  if (tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.ca_file.empty()) {
      absl::StatusOr<std::string> ca = ReadFile(options.ca_file);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    if (!options.cert_file.empty()) {
      absl::StatusOr<std::string> cert = ReadFile(options.cert_file);
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = ReadFile(options.key_file);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    impl->credentials = grpc::SslCredentials(ssl);
  } else {
    impl->credentials = grpc::InsecureChannelCredentials();
  }
  impl->rng.seed(options.jitter_seed != 0 ? options.jitter_seed : std::random_device{}());
  impl->options = std::move(options);
  impl->spool = spool;
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<Uplink>(new Uplink(std::move(impl)));
}

void Uplink::Nudge() {
  absl::MutexLock lock(&impl_->mu);
  impl_->nudged = true;
}

void Uplink::Shutdown() {
  if (impl_ == nullptr) return;
  {
    absl::MutexLock lock(&impl_->mu);
    if (impl_->stop && !impl_->thread.joinable()) return;
    impl_->stop = true;
    if (impl_->live_context != nullptr) impl_->live_context->TryCancel();
  }
  if (impl_->thread.joinable()) impl_->thread.join();
}

const UplinkCounters& Uplink::counters() const { return impl_->counters; }

void Uplink::Impl::Run() {
  absl::Duration backoff = absl::FromChrono(options.backoff_min);
  bool first = true;
  while (!Stopping()) {
    if (!first) ++counters.reconnects;
    first = false;
    bool fatal = false;
    const absl::Duration next = Session(&fatal);
    counters.connected = false;
    if (next == absl::ZeroDuration()) {
      backoff = absl::FromChrono(options.backoff_min);
      continue;
    }
    backoff = fatal ? absl::FromChrono(options.backoff_max)
                    : std::min(backoff * 2, absl::FromChrono(options.backoff_max));
    // Full jitter over [backoff/2, backoff]: reconnecting agents spread out.
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    const absl::Duration wait = backoff * jitter(rng);
    absl::MutexLock lock(&mu);
    mu.AwaitWithTimeout(absl::Condition(&stop), wait);
  }
}

absl::Duration Uplink::Impl::Session(bool* fatal) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  if (!options.server_name.empty()) args.SetSslTargetNameOverride(options.server_name);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(options.server_address, credentials, args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + options.hello_timeout)) {
    return absl::FromChrono(options.backoff_min);
  }
  auto stub = v1::Ingest::NewStub(channel);
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu);
    if (stop) return absl::ZeroDuration();
    live_context = &context;
  }
  struct Unregister {
    Impl* impl;
    ~Unregister() {
      absl::MutexLock lock(&impl->mu);
      impl->live_context = nullptr;
    }
  } unregister{this};
  auto stream = stub->Stream(&context);

  v1::AgentMessage hello;
  hello.mutable_hello()->set_host_id(options.host_id);
  hello.mutable_hello()->set_agent_epoch(spool->epoch());
  hello.mutable_hello()->set_agent_version(options.agent_version);
  // The shims' description of the host (pCPUs, PMUs) if one was ever seen, else discovery alone:
  // the server checks every record's pCPU against the hello's HostInfo.
  absl::StatusOr<v1::HostInfo> saved = spool->LoadHostInfo();
  if (saved.ok() && saved->pcpus_size() > 0) {
    *hello.mutable_hello()->mutable_host_info() = *saved;
  } else {
    *hello.mutable_hello()->mutable_host_info() = options.host_info;
  }
  hello.mutable_hello()->mutable_host_info()->set_host_id(options.host_id);
  hello.mutable_hello()->set_last_acked_seq(counters.durable_seq.load());
  v1::ServerMessage reply;
  if (!stream->Write(hello) || !stream->Read(&reply) || !reply.has_hello_ack()) {
    grpc::Status s = stream->Finish();
    if (reply.has_error()) {
      std::cerr << "fleetpmu-agent: server refused the hello: " << reply.error().reason() << "\n";
      *fatal = true;
    } else if (!s.ok()) {
      std::cerr << "fleetpmu-agent: ingest stream to " << options.server_address << " failed: " << s.error_message()
                << "\n";
      *fatal = s.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
               s.error_code() == grpc::StatusCode::UNAUTHENTICATED;
    }
    return absl::FromChrono(options.backoff_min);
  }
  ++counters.connects;
  counters.connected = true;
  uint64_t durable = reply.hello_ack().durable_seq();
  counters.durable_seq = durable;
  if (absl::Status s = spool->Acknowledge(durable); !s.ok()) std::cerr << "fleetpmu-agent: " << s.message() << "\n";

  // The reader follows acks and errors; the writer (this thread) keeps the window full.
  Window window;
  {
    absl::MutexLock lock(&window.mu);
    window.acked = durable;
  }
  absl::Mutex& window_mu = window.mu;
  uint64_t& acked = window.acked;
  bool& broken = window.broken;
  bool& transient = window.transient;
  std::thread reader([&] {
    v1::ServerMessage m;
    while (stream->Read(&m)) {
      if (m.has_ack()) {
        const uint64_t seq = m.ack().durable_seq();
        if (absl::Status s = spool->Acknowledge(seq); !s.ok()) std::cerr << "fleetpmu-agent: " << s.message() << "\n";
        absl::MutexLock lock(&window_mu);
        if (seq > acked) {
          counters.batches_acked += seq - acked;
          acked = seq;
          counters.durable_seq = seq;
        }
      } else if (m.has_error()) {
        const v1::IngestError& e = m.error();
        std::cerr << "fleetpmu-agent: server refused batch " << e.seq() << ": "
                  << v1::IngestError::Code_Name(e.code()) << ": " << e.reason() << "\n";
        if (e.code() == v1::IngestError::INVALID_BATCH || e.code() == v1::IngestError::TOO_LARGE) {
          ++counters.batches_rejected;  // the server advanced its cursor past it
          (void)spool->Acknowledge(e.seq());
          absl::MutexLock lock(&window_mu);
          if (e.seq() > acked) {
            acked = e.seq();
            counters.durable_seq = e.seq();
          }
        } else {
          absl::MutexLock lock(&window_mu);
          transient = true;
          break;
        }
      }
    }
    absl::MutexLock lock(&window_mu);
    broken = true;
  });

  uint64_t sent = durable;
  bool failed = false;
  while (!failed) {
    {
      absl::MutexLock lock(&mu);
      if (stop) break;
    }
    uint64_t acked_now;
    {
      absl::MutexLock lock(&window_mu);
      // Wake on an ack, a broken stream, or every 50 ms to look for new batches and stop.
      if (sent - acked >= options.window) {
        window_mu.AwaitWithTimeout(absl::Condition(&window, &Window::Ended), absl::Milliseconds(50));
      }
      if (broken || transient) break;
      acked_now = acked;
    }
    if (sent - acked_now >= options.window) continue;
    absl::StatusOr<std::vector<SpooledBatch>> batches = spool->ReadAfter(sent, options.window - (sent - acked_now));
    if (!batches.ok()) {
      std::cerr << "fleetpmu-agent: " << batches.status().message() << "\n";
      failed = true;
      break;
    }
    if (batches->empty()) {
      // Everything is sent; if the spool dropped batches and no report is coming to carry that
      // news (the shims went quiet), it goes up on its own.
      if (sent == acked_now) {
        absl::StatusOr<uint64_t> seq = spool->AppendPendingDrops(absl::ToUnixNanos(absl::Now()));
        if (seq.ok() && *seq != 0) continue;
      }
      absl::MutexLock lock(&mu);
      mu.AwaitWithTimeout(absl::Condition(this, &Impl::StopOrNudge), absl::Milliseconds(50));
      nudged = false;
      continue;
    }
    for (const SpooledBatch& b : *batches) {
      v1::AgentMessage m;
      if (!m.mutable_batch()->ParseFromString(b.serialized)) {
        std::cerr << "fleetpmu-agent: spooled batch " << b.seq << " is corrupt; skipping it\n";
        (void)spool->Acknowledge(b.seq);
        sent = b.seq;
        continue;
      }
      if (!stream->Write(m)) {
        failed = true;
        break;
      }
      ++counters.batches_sent;
      if (b.seq <= highest_ever_sent) ++counters.batches_replayed;
      highest_ever_sent = std::max(highest_ever_sent, b.seq);
      sent = b.seq;
    }
  }
  context.TryCancel();
  reader.join();
  (void)stream->Finish();
  return Stopping() ? absl::ZeroDuration() : absl::FromChrono(options.backoff_min);
}

}  // namespace fleetpmu::agent
