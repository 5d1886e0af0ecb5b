#include "proto/fleetpmu/config/config_defaults.h"

#include <string>

#include "fleetpmu/v1/config.pb.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace fleetpmu::config {
namespace {

using fleetpmu::v1::AgentConfig;
using fleetpmu::v1::ServerConfig;
using fleetpmu::v1::ShimConfig;
using google::protobuf::util::MessageDifferencer;

template <typename ConfigT>
ConfigT Parse(const std::string& text) {
  ConfigT config;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &config)) << text;
  return config;
}

int64_t Nanos(const google::protobuf::Duration& d) {
  return d.seconds() * 1000000000 + d.nanos();
}

TEST(ApplyShimDefaultsTest, EmptyConfigGetsTheDocumentedDefaults) {
  ShimConfig config;
  ApplyShimDefaults(&config);
  EXPECT_EQ(config.shim_id(), "fleetpmu-shim");
  EXPECT_EQ(config.backend(), fleetpmu::v1::BACKEND_SIM);
  EXPECT_EQ(config.agent_socket(), "/run/fleetpmu/shim.sock");
  EXPECT_EQ(Nanos(config.report_interval()), 10000000000);
  EXPECT_EQ(config.telemetry_ring_capacity(), 4096u);
  EXPECT_FALSE(config.check_invariants());
  EXPECT_FALSE(config.has_kvm());

  const fleetpmu::v1::SimHost& sim = config.sim();
  EXPECT_EQ(sim.host_id(), "sim-host");
  ASSERT_EQ(sim.pcpu_groups_size(), 1);
  EXPECT_EQ(sim.pcpu_groups(0).count(), 4u);
  EXPECT_EQ(sim.pcpu_groups(0).n_counters(), 6u);
  EXPECT_TRUE(sim.pcpu_groups(0).fgt());
  EXPECT_TRUE(sim.pcpu_groups(0).hpmn0());
  EXPECT_TRUE(sim.pcpu_groups(0).p5());
  EXPECT_EQ(sim.pcpu_groups(0).pmu_id(), "armv8_pmuv3_0");
  EXPECT_EQ(sim.reservation_mode(), fleetpmu::v1::RESERVATION_MODE_STATIC);
  EXPECT_EQ(Nanos(sim.time_slice()), 4000000);
  EXPECT_DOUBLE_EQ(sim.migration_probability(), 0.01);
  EXPECT_DOUBLE_EQ(sim.speed(), 1.0);
  EXPECT_FALSE(sim.has_duration()) << "unset duration means: run until stopped";
}

TEST(ApplyShimDefaultsTest, VmDefaultsTakeHalfTheSmallestN) {
  ShimConfig config = Parse<ShimConfig>(R"pb(
    sim {
      pcpu_groups { count: 2 n_counters: 8 }
      pcpu_groups { count: 2 n_counters: 5 }
      vms { vm_id: "a" tenant_id: "t" }
      vms { vm_id: "b" tenant_id: "t" h: 0 }
    }
  )pb");
  ApplyShimDefaults(&config);
  const fleetpmu::v1::SimVm& a = config.sim().vms(0);
  EXPECT_EQ(a.h(), 2u);
  EXPECT_EQ(config.sim().vms(1).h(), 0u) << "an explicit h: 0 is a setting, not unset";
  EXPECT_EQ(a.vcpus(), 1u);
  EXPECT_EQ(a.policy(), fleetpmu::v1::POLICY_REVIEWED);
  EXPECT_EQ(a.implementation(), fleetpmu::v1::PMU_IMPLEMENTATION_PARTITIONED);
  EXPECT_EQ(a.workload().kind(), fleetpmu::v1::Workload::COUNTING);
  ASSERT_EQ(a.workload().events_size(), 2);
  EXPECT_EQ(a.workload().events(0), 0x08u);
  EXPECT_EQ(a.workload().events(1), 0x11u);
  EXPECT_EQ(Nanos(a.workload().handler_latency()), 5000);
  EXPECT_FALSE(a.workload().has_run_between_halts()) << "unset means: never halts";
  EXPECT_EQ(config.sim().pcpu_groups(1).pmu_id(), "armv8_pmuv3_0");
  EXPECT_FALSE(config.sim().pcpu_groups(1).fgt()) << "a listed group gets no features";
}

TEST(ApplyShimDefaultsTest, SetFieldsAreKeptEvenWhenInvalid) {
  ShimConfig config = Parse<ShimConfig>(R"pb(
    shim_id: "mine"
    telemetry_ring_capacity: 1000
    report_interval { seconds: 0 }
    sim { migration_probability: 0 speed: 0 pcpu_groups { n_counters: 40 } }
  )pb");
  ApplyShimDefaults(&config);
  EXPECT_EQ(config.shim_id(), "mine");
  EXPECT_EQ(config.telemetry_ring_capacity(), 1000u);
  EXPECT_EQ(Nanos(config.report_interval()), 0) << "explicit 0s is for validation to refuse";
  EXPECT_DOUBLE_EQ(config.sim().migration_probability(), 0.0);
  EXPECT_DOUBLE_EQ(config.sim().speed(), 0.0);
  EXPECT_EQ(config.sim().pcpu_groups(0).n_counters(), 40u);
}

TEST(ApplyShimDefaultsTest, KvmBackendFillsOnlyTheKvmBlock) {
  ShimConfig config = Parse<ShimConfig>(R"pb(
    backend: BACKEND_KVM
    kvm { vms { vm_id: "c" tenant_id: "t" } }
  )pb");
  ApplyShimDefaults(&config);
  EXPECT_FALSE(config.has_sim());
  EXPECT_EQ(config.kvm().kvm_device(), "/dev/kvm");
  EXPECT_EQ(config.kvm().kernel_policy(), fleetpmu::v1::POLICY_REVIEWED);
  const fleetpmu::v1::KvmVm& vm = config.kvm().vms(0);
  EXPECT_FALSE(vm.has_h()) << "h depends on the real N";
  EXPECT_EQ(vm.memory_mib(), 16u);
  EXPECT_EQ(vm.canary().sample_period(), 100000u);
  EXPECT_EQ(vm.canary().wraps(), 1000u);
  EXPECT_TRUE(vm.canary().use_cycle_counter());
  EXPECT_EQ(vm.canary().cycle_sample_period(), 100000u);  // sample_period
  EXPECT_EQ(vm.canary().timeout().seconds(), 30);
}

TEST(ApplyAgentDefaultsTest, EmptyConfigGetsTheDocumentedDefaults) {
  AgentConfig config;
  ApplyAgentDefaults(&config);
  EXPECT_EQ(config.host_id(), "") << "resolved from the hostname at startup";
  EXPECT_EQ(config.shim_socket(), "/run/fleetpmu/shim.sock");
  EXPECT_EQ(config.shim_socket_mode(), 0660u);
  EXPECT_EQ(config.spool_path(), "/var/lib/fleetpmu/agent-spool.db");
  EXPECT_EQ(config.spool_max_bytes(), 256u << 20);
  EXPECT_EQ(config.spool_overflow_policy(), fleetpmu::v1::SPOOL_OVERFLOW_POLICY_DROP_OLDEST);
  EXPECT_EQ(config.server_address(), "") << "required, no default";
  EXPECT_FALSE(config.has_tls());
  EXPECT_FALSE(config.allow_plaintext());
  EXPECT_EQ(config.batch_max_bytes(), 1u << 20);
  EXPECT_EQ(config.batch_max_records(), 64u);
  EXPECT_EQ(Nanos(config.batch_max_delay()), 1000000000);
  EXPECT_EQ(Nanos(config.backoff_min()), 200000000);
  EXPECT_EQ(Nanos(config.backoff_max()), 30000000000);
  EXPECT_EQ(config.metrics_listen(), "127.0.0.1:9465");
}

TEST(ApplyServerDefaultsTest, EmptyConfigGetsTheDocumentedDefaults) {
  ServerConfig config;
  ApplyServerDefaults(&config);
  EXPECT_EQ(config.ingest_listen(), "0.0.0.0:7443");
  EXPECT_EQ(config.query_listen(), "127.0.0.1:7444");
  EXPECT_EQ(config.metrics_listen(), "127.0.0.1:9464");
  EXPECT_EQ(config.storage().sqlite_path(), "/var/lib/fleetpmu/fleetpmu.db");
  EXPECT_EQ(config.storage().raw_retention().seconds(), 48 * 3600);
  EXPECT_EQ(config.storage().rollup_interval().seconds(), 60);
  EXPECT_EQ(config.storage().rollup_retention().seconds(), 90 * 86400);
  EXPECT_FALSE(config.has_tls()) << "TLS is turned on by writing a tls block";
  EXPECT_EQ(config.limits().max_streams(), 1024u);
  EXPECT_EQ(config.limits().max_message_bytes(), 4u << 20);
  EXPECT_EQ(config.limits().max_batch_records(), 1000u);
  EXPECT_DOUBLE_EQ(config.limits().per_stream_batches_per_second(), 20.0);
  EXPECT_FALSE(config.export_per_vcpu_series());
}

TEST(ApplyServerDefaultsTest, TlsRequiresClientCertificatesUnlessSaidOtherwise) {
  ServerConfig config = Parse<ServerConfig>("tls { cert_file: \"s.pem\" }");
  ApplyServerDefaults(&config);
  EXPECT_TRUE(config.tls().require_client_cert());
  ServerConfig opted_out = Parse<ServerConfig>("tls { require_client_cert: false }");
  ApplyServerDefaults(&opted_out);
  EXPECT_FALSE(opted_out.tls().require_client_cert());
}

TEST(ApplyDefaultsTest, ApplyingTwiceEqualsApplyingOnce) {
  ShimConfig shim = Parse<ShimConfig>("sim { vms { vm_id: \"a\" tenant_id: \"t\" } }");
  ApplyShimDefaults(&shim);
  ShimConfig shim_twice = shim;
  ApplyShimDefaults(&shim_twice);
  EXPECT_TRUE(MessageDifferencer::Equals(shim, shim_twice));

  AgentConfig agent;
  ApplyAgentDefaults(&agent);
  AgentConfig agent_twice = agent;
  ApplyAgentDefaults(&agent_twice);
  EXPECT_TRUE(MessageDifferencer::Equals(agent, agent_twice));

  ServerConfig server = Parse<ServerConfig>("tls {}");
  ApplyServerDefaults(&server);
  ServerConfig server_twice = server;
  ApplyServerDefaults(&server_twice);
  EXPECT_TRUE(MessageDifferencer::Equals(server, server_twice));
}

TEST(SmallestCounterCountTest, UsesTheDefaultGroupAndDefaultN) {
  EXPECT_EQ(SmallestCounterCount(fleetpmu::v1::SimHost()), kDefaultSimCounters);
  fleetpmu::v1::SimHost sim;
  sim.add_pcpu_groups();  // n_counters unset: 6
  sim.add_pcpu_groups()->set_n_counters(4);
  EXPECT_EQ(SmallestCounterCount(sim), 4u);
}

}  // namespace
}  // namespace fleetpmu::config
