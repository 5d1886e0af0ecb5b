#include "proto/fleetpmu/config/config_validation.h"

#include <string>

#include "fleetpmu/v1/config.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "proto/fleetpmu/config/config_defaults.h"

namespace fleetpmu::config {
namespace {

using fleetpmu::v1::AgentConfig;
using fleetpmu::v1::ServerConfig;
using fleetpmu::v1::ShimConfig;
using ::testing::HasSubstr;

template <typename ConfigT>
ConfigT Parse(const std::string& text) {
  ConfigT config;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &config)) << text;
  return config;
}

// Debian's abseil has its own string_view type, which gmock's string matchers do not take.
std::string Message(const absl::Status& status) { return std::string(status.message()); }

// A valid sim host that the ShimConfig tests break one field at a time.
constexpr char kShim[] = R"pb(
  backend: BACKEND_SIM
  sim {
    pcpu_groups { count: 2 n_counters: 8 fgt: true hpmn0: true }
    pcpu_groups { count: 2 n_counters: 6 fgt: false hpmn0: false }
    vms { vm_id: "web-1" tenant_id: "acme" vcpus: 2 h: 3 }
    vms { vm_id: "web-2" tenant_id: "acme" h: 6 }
    vms { vm_id: "db-1" tenant_id: "globex" }
    host_events { name: "cycles" event_code: 0x11 pcpus: [0, 3] }
  }
)pb";

std::string ShimProblem(const std::string& extra_text) {
  return Message(ValidateShimConfig(Parse<ShimConfig>(std::string(kShim) + extra_text)));
}

std::string ShimProblem(void (*mutate)(ShimConfig*)) {
  ShimConfig config = Parse<ShimConfig>(kShim);
  mutate(&config);
  absl::Status status = ValidateShimConfig(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  return Message(status);
}

TEST(ValidateShimConfigTest, AcceptsTheBaseConfigAndAnEmptyOne) {
  EXPECT_TRUE(ValidateShimConfig(Parse<ShimConfig>(kShim)).ok());
  EXPECT_TRUE(ValidateShimConfig(ShimConfig()).ok()) << "every default must be valid";
}

TEST(ValidateShimConfigTest, RejectsHAboveTheSmallestN) {
  EXPECT_EQ(ShimProblem([](ShimConfig* c) { c->mutable_sim()->mutable_vms(2)->set_h(7); }),
            "sim.vms[2].h: 7 exceeds the smallest N=6 of the pCPUs (sim.pcpu_groups[1])");
}

TEST(ValidateShimConfigTest, RejectsHZeroWithoutHpmn0) {
  EXPECT_THAT(ShimProblem([](ShimConfig* c) { c->mutable_sim()->mutable_vms(0)->set_h(0); }),
              HasSubstr("sim.vms[0].h: 0 needs FEAT_HPMN0 on every pCPU, but "
                        "sim.pcpu_groups[1] has hpmn0: false"));
}

TEST(ValidateShimConfigTest, AcceptsHZeroWhenEveryPcpuHasHpmn0) {
  ShimConfig config = Parse<ShimConfig>(kShim);
  config.mutable_sim()->mutable_pcpu_groups(1)->set_hpmn0(true);
  config.mutable_sim()->mutable_vms(0)->set_h(0);
  EXPECT_TRUE(ValidateShimConfig(config).ok());
}

TEST(ValidateShimConfigTest, RejectsMoreThan31Counters) {
  EXPECT_THAT(ShimProblem([](ShimConfig* c) {
                c->mutable_sim()->mutable_pcpu_groups(0)->set_n_counters(32);
              }),
              HasSubstr("sim.pcpu_groups[0].n_counters: 32 exceeds 31"));
}

TEST(ValidateShimConfigTest, RejectsDuplicateVmId) {
  EXPECT_EQ(ShimProblem([](ShimConfig* c) {
              c->mutable_sim()->mutable_vms(2)->set_vm_id("web-1");
            }),
            "sim.vms[2].vm_id: \"web-1\" duplicates sim.vms[0].vm_id");
}

TEST(ValidateShimConfigTest, RejectsEmptyTenant) {
  EXPECT_THAT(ShimProblem([](ShimConfig* c) {
                c->mutable_sim()->mutable_vms(1)->clear_tenant_id();
              }),
              HasSubstr("sim.vms[1].tenant_id: empty"));
}

TEST(ValidateShimConfigTest, RejectsIdentityWithUnsafeCharacters) {
  EXPECT_THAT(ShimProblem([](ShimConfig* c) {
                c->mutable_sim()->mutable_vms(0)->set_vm_id("web 1;drop");
              }),
              HasSubstr("sim.vms[0].vm_id: \"web 1;drop\" has a character outside"));
}

TEST(ValidateShimConfigTest, RejectsTooManyVcpus) {
  EXPECT_THAT(ShimProblem([](ShimConfig* c) {
                c->mutable_sim()->mutable_vms(0)->set_vcpus(513);
              }),
              HasSubstr("sim.vms[0].vcpus: 513 is outside 1..512"));
}

TEST(ValidateShimConfigTest, RejectsABlockForTheOtherBackend) {
  EXPECT_THAT(ShimProblem([](ShimConfig* c) { c->mutable_kvm(); }),
              HasSubstr("kvm: set, but backend is BACKEND_SIM"));
  ShimConfig kvm = Parse<ShimConfig>("backend: BACKEND_KVM sim {}");
  EXPECT_THAT(Message(ValidateShimConfig(kvm)),
              HasSubstr("sim: set, but backend is BACKEND_KVM"));
  ShimConfig defaulted = Parse<ShimConfig>("kvm {}");
  EXPECT_THAT(Message(ValidateShimConfig(defaulted)),
              HasSubstr("(the default; add backend: BACKEND_KVM)"));
}

TEST(ValidateShimConfigTest, RejectsReportIntervalOutOfRange) {
  EXPECT_THAT(ShimProblem("report_interval { nanos: 50000000 }"),
              HasSubstr("report_interval: 50ms is below the minimum 100ms"));
  EXPECT_THAT(ShimProblem("report_interval { seconds: 1 nanos: -5 }"),
              HasSubstr("report_interval: malformed duration"));
}

TEST(ValidateShimConfigTest, RejectsRingCapacityThatIsNotAPowerOfTwo) {
  EXPECT_THAT(ShimProblem("telemetry_ring_capacity: 1000"),
              HasSubstr("telemetry_ring_capacity: 1000 is not a power of two"));
}

TEST(ValidateShimConfigTest, RejectsLongSocketPath) {
  EXPECT_THAT(ShimProblem(std::string("agent_socket: \"/") + std::string(120, 'x') + "\""),
              HasSubstr("agent_socket: \"/xxx"));
}

TEST(ValidateShimConfigTest, RejectsBadEventFilterRanges) {
  const std::string problem = ShimProblem([](ShimConfig* c) {
    auto* filter = c->mutable_sim()->mutable_vms(1)->mutable_event_filter();
    auto* overflowing = filter->add_ranges();
    overflowing->set_base_event(0xFF00);
    overflowing->set_nevents(0x200);
    overflowing->set_action(fleetpmu::v1::FILTER_ACTION_DENY);
    filter->add_ranges()->set_nevents(1);  // no action
  });
  EXPECT_THAT(problem, HasSubstr("sim.vms[1].event_filter.ranges[0].nevents: 512 from "
                                 "base_event 0xFF00 passes the last event number 0xFFFF"));
  EXPECT_THAT(problem, HasSubstr("sim.vms[1].event_filter.ranges[1].action: unset"));
}

TEST(ValidateShimConfigTest, RejectsWorkloadEventAboveSixteenBits) {
  EXPECT_THAT(ShimProblem([](ShimConfig* c) {
                c->mutable_sim()->mutable_vms(0)->mutable_workload()->add_events(0x10000);
              }),
              HasSubstr("sim.vms[0].workload.events[0]: 0x10000 exceeds 0xFFFF"));
}

TEST(ValidateShimConfigTest, RejectsUnknownEnumNumbers) {
  EXPECT_THAT(ShimProblem([](ShimConfig* c) {
                c->mutable_sim()->mutable_vms(0)->set_policy(
                    static_cast<fleetpmu::v1::Policy>(9));
              }),
              HasSubstr("sim.vms[0].policy: 9 is not a fleetpmu.v1.Policy value"));
}

TEST(ValidateShimConfigTest, RejectsHostEventProblems) {
  const std::string problem = ShimProblem([](ShimConfig* c) {
    auto* event = c->mutable_sim()->add_host_events();
    event->set_name("cycles");
    event->add_pcpus(4);  // the base host has pCPUs 0..3
  });
  EXPECT_THAT(problem, HasSubstr("sim.host_events[1].name: \"cycles\" duplicates "
                                 "sim.host_events[0].name"));
  EXPECT_THAT(problem, HasSubstr("sim.host_events[1].pcpus[0]: 4 is not a pCPU"));
}

TEST(ValidateShimConfigTest, RejectsProbabilityAboveOne) {
  EXPECT_THAT(ShimProblem([](ShimConfig* c) {
                c->mutable_sim()->set_migration_probability(1.5);
              }),
              HasSubstr("sim.migration_probability: 1.5 is outside 0..1"));
}

TEST(ValidateShimConfigTest, ChecksKvmVms) {
  ShimConfig config = Parse<ShimConfig>(R"pb(
    backend: BACKEND_KVM
    kvm {
      vms { vm_id: "c1" tenant_id: "acme" h: 40 }
      vms { vm_id: "c1" tenant_id: "" }
    }
  )pb");
  const std::string problem = Message(ValidateShimConfig(config));
  EXPECT_THAT(problem, HasSubstr("kvm.vms[0].h: 40 exceeds 31"));
  EXPECT_THAT(problem, HasSubstr("kvm.vms[1].vm_id: \"c1\" duplicates kvm.vms[0].vm_id"));
  EXPECT_THAT(problem, HasSubstr("kvm.vms[1].tenant_id: empty"));
}

TEST(ValidateShimConfigTest, ChecksKvmCanaryPeriodsAndHostEvents) {
  ShimConfig config = Parse<ShimConfig>(R"pb(
    backend: BACKEND_KVM
    kvm {
      vms {
        vm_id: "c1"
        tenant_id: "acme"
        canary { events: [0x00] sample_periods: [64, 5] timeout { nanos: 1000 } }
      }
      host_events { name: "cycles" event_code: 0x11 sample_period: 1000 }
      host_events { name: "cycles" event_code: 0x10000 }
    }
  )pb");
  ApplyShimDefaults(&config);
  const std::string problem = Message(ValidateShimConfig(config));
  EXPECT_THAT(problem, HasSubstr("kvm.vms[0].canary.sample_periods: 2 periods for 1 events"));
  EXPECT_THAT(problem, HasSubstr("kvm.vms[0].canary.timeout"));
  EXPECT_THAT(problem, HasSubstr("kvm.host_events[0].sample_period: the kvm backend counts host events"));
  EXPECT_THAT(problem, HasSubstr("kvm.host_events[1].name: \"cycles\" duplicates kvm.host_events[0].name"));
  EXPECT_THAT(problem, HasSubstr("kvm.host_events[1].event_code: 0x10000 exceeds 0xFFFF"));
}

TEST(ValidateShimConfigTest, ReportsEveryProblemButAtMostTwenty) {
  ShimConfig config = Parse<ShimConfig>(kShim);
  for (int i = 0; i < 30; ++i) config.mutable_sim()->add_vms()->set_vm_id("x");
  const std::string problem = Message(ValidateShimConfig(config));
  // 30 empty tenants and 29 duplicates: 20 shown, then a count.
  EXPECT_THAT(problem, HasSubstr("\nand 39 more problems"));
}

// --- AgentConfig ----------------------------------------------------------------------------

constexpr char kAgent[] = R"pb(
  host_id: "arm-17"
  server_address: "fleetpmu.example:7443"
  tls { ca_file: "ca.pem" cert_file: "agent.pem" key_file: "agent-key.pem" }
)pb";

std::string AgentProblem(const std::string& extra_text) {
  return Message(ValidateAgentConfig(Parse<AgentConfig>(std::string(kAgent) + extra_text)));
}

TEST(ValidateAgentConfigTest, AcceptsTheBaseConfig) {
  EXPECT_TRUE(ValidateAgentConfig(Parse<AgentConfig>(kAgent)).ok());
}

TEST(ValidateAgentConfigTest, RejectsPlaintextWithoutAllowPlaintext) {
  AgentConfig config = Parse<AgentConfig>(kAgent);
  config.clear_tls();
  EXPECT_THAT(Message(ValidateAgentConfig(config)),
              HasSubstr("tls: not set; a plaintext connection to the server needs "
                        "allow_plaintext: true"));
  config.set_allow_plaintext(true);
  EXPECT_TRUE(ValidateAgentConfig(config).ok());
}

std::string ServerAddressProblem(const std::string& address) {
  AgentConfig config = Parse<AgentConfig>(kAgent);
  config.set_server_address(address);
  return Message(ValidateAgentConfig(config));
}

TEST(ValidateAgentConfigTest, RejectsMissingOrMalformedServerAddress) {
  EXPECT_THAT(ServerAddressProblem(""), HasSubstr("server_address: empty"));
  EXPECT_EQ(ServerAddressProblem("fleetpmu.example"),
            "server_address: \"fleetpmu.example\" has no port (expected host:port or "
            "unix:/path)");
  EXPECT_THAT(ServerAddressProblem("fleetpmu.example:70000"),
              HasSubstr("port \"70000\" is not a number 0..65535"));
  EXPECT_THAT(ServerAddressProblem("::1:7443"), HasSubstr("IPv6 host without brackets"));
  EXPECT_THAT(ServerAddressProblem("fleetpmu.example:0"), HasSubstr("port 0 cannot be dialled"));
}

TEST(ValidateAgentConfigTest, AcceptsIpv6UnixAndDnsTargets) {
  for (const char* address : {"[::1]:7443", "unix:/run/fleetpmu/ingest.sock",
                              "dns:///fleetpmu.example:7443", "10.0.0.1:7443"}) {
    EXPECT_EQ(ServerAddressProblem(address), "") << address;
  }
}

TEST(ValidateAgentConfigTest, RejectsCertificateWithoutKey) {
  AgentConfig config = Parse<AgentConfig>(kAgent);
  config.mutable_tls()->clear_key_file();
  EXPECT_THAT(Message(ValidateAgentConfig(config)),
              HasSubstr("tls.key_file: empty, but tls.cert_file is set"));
}

TEST(ValidateAgentConfigTest, RejectsBackoffMinAboveMax) {
  EXPECT_THAT(AgentProblem("backoff_min { seconds: 40 } backoff_max { seconds: 30 }"),
              HasSubstr("backoff_min: 40s exceeds backoff_max 30s"));
}

TEST(ValidateAgentConfigTest, RejectsSocketModeAbove0777) {
  EXPECT_THAT(AgentProblem("shim_socket_mode: 01000"),
              HasSubstr("shim_socket_mode: 01000 is not a permission mask"));
}

TEST(ValidateAgentConfigTest, RejectsSmallSpoolAndBadBatchBounds) {
  const std::string problem =
      AgentProblem("spool_max_bytes: 1000 batch_max_records: 200000 batch_max_bytes: 10");
  EXPECT_THAT(problem, HasSubstr("spool_max_bytes: 1000 is below the minimum"));
  EXPECT_THAT(problem, HasSubstr("batch_max_records: 200000 is outside 1..100000"));
  EXPECT_THAT(problem, HasSubstr("batch_max_bytes: 10 is outside 4096..67108864"));
}

TEST(ValidateAgentConfigTest, RejectsBadLabelsAndMetricsAddress) {
  const std::string problem =
      AgentProblem("labels { key: \"Zone\" value: \"a\" } metrics_listen: \":9465\"");
  EXPECT_THAT(problem, HasSubstr("labels[\"Zone\"]: a label key is 1..63 bytes of [a-z0-9_]"));
  EXPECT_THAT(problem, HasSubstr("metrics_listen: \":9465\" has no host"));
}

TEST(ValidateAgentConfigTest, EmptyHostIdMeansTheHostname) {
  AgentConfig config = Parse<AgentConfig>(kAgent);
  config.clear_host_id();
  EXPECT_TRUE(ValidateAgentConfig(config).ok());
  config.set_host_id("arm 17");
  EXPECT_THAT(Message(ValidateAgentConfig(config)), HasSubstr("host_id: \"arm 17\""));
}

// --- ServerConfig ---------------------------------------------------------------------------

constexpr char kServer[] = R"pb(
  tls { ca_file: "ca.pem" cert_file: "server.pem" key_file: "server-key.pem" }
  tokens_file: "/etc/fleetpmu/query-tokens"
)pb";

std::string ServerProblem(const std::string& extra_text) {
  return Message(ValidateServerConfig(Parse<ServerConfig>(std::string(kServer) + extra_text)));
}

TEST(ValidateServerConfigTest, AcceptsTheBaseConfig) {
  EXPECT_TRUE(ValidateServerConfig(Parse<ServerConfig>(kServer)).ok());
}

TEST(ValidateServerConfigTest, RejectsPlaintextWithoutAllowPlaintext) {
  ServerConfig config = Parse<ServerConfig>(kServer);
  config.clear_tls();
  EXPECT_THAT(Message(ValidateServerConfig(config)),
              HasSubstr("tls: not set; plaintext listeners need allow_plaintext: true"));
  config.set_allow_plaintext(true);
  config.clear_tokens_file();
  EXPECT_TRUE(ValidateServerConfig(config).ok()) << "the demo configuration";
}

TEST(ValidateServerConfigTest, RejectsMissingTokensWithoutAllowPlaintext) {
  ServerConfig config = Parse<ServerConfig>(kServer);
  config.clear_tokens_file();
  EXPECT_THAT(Message(ValidateServerConfig(config)), HasSubstr("tokens_file: empty"));
}

TEST(ValidateServerConfigTest, ClientCertificatesNeedACaByDefault) {
  ServerConfig config = Parse<ServerConfig>(kServer);
  config.mutable_tls()->clear_ca_file();
  EXPECT_THAT(Message(ValidateServerConfig(config)),
              HasSubstr("tls.ca_file: empty, but tls.require_client_cert is true"));
  config.mutable_tls()->set_require_client_cert(false);
  EXPECT_TRUE(ValidateServerConfig(config).ok());
}

TEST(ValidateServerConfigTest, RejectsMetricsSharingAGrpcAddress) {
  EXPECT_THAT(ServerProblem("ingest_listen: \"0.0.0.0:9000\" metrics_listen: \"0.0.0.0:9000\""),
              HasSubstr("metrics_listen: \"0.0.0.0:9000\" is also ingest_listen"));
}

TEST(ValidateServerConfigTest, AcceptsPortZeroAndSharedIngestQueryAddress) {
  EXPECT_TRUE(ValidateServerConfig(
                  Parse<ServerConfig>(std::string(kServer) +
                                      "ingest_listen: \"127.0.0.1:0\" "
                                      "query_listen: \"127.0.0.1:0\" "
                                      "metrics_listen: \"127.0.0.1:9999\""))
                  .ok());
}

TEST(ValidateServerConfigTest, RejectsRollupsShorterThanRawRetention) {
  EXPECT_THAT(ServerProblem("storage { raw_retention { seconds: 7200 } "
                            "rollup_retention { seconds: 3600 } }"),
              HasSubstr("storage.rollup_retention: 1h is shorter than "
                        "storage.raw_retention 2h"));
}

TEST(ValidateServerConfigTest, RejectsLimitsOutOfRange) {
  const std::string problem = ServerProblem(
      "limits { max_message_bytes: 1000 per_stream_batches_per_second: -1 }");
  EXPECT_THAT(problem, HasSubstr("limits.max_message_bytes: 1000 is outside"));
  EXPECT_THAT(problem, HasSubstr("limits.per_stream_batches_per_second: -1 is outside"));
}

TEST(ValidateServerConfigTest, RejectsBadListenAddress) {
  EXPECT_THAT(ServerProblem("query_listen: \"localhost:http\""),
              HasSubstr("query_listen: \"localhost:http\" port \"http\" is not a number"));
  EXPECT_THAT(ServerProblem("ingest_listen: \"unix:\""),
              HasSubstr("ingest_listen: \"unix:\" unix: needs a socket path"));
}

}  // namespace
}  // namespace fleetpmu::config
