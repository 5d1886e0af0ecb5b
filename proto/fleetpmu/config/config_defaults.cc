#include "proto/fleetpmu/config/config_defaults.h"

#include <algorithm>
#include <cstdint>

#include "google/protobuf/duration.pb.h"

namespace fleetpmu::config {
namespace {

using fleetpmu::v1::AgentConfig;
using fleetpmu::v1::CanaryParams;
using fleetpmu::v1::KvmHost;
using fleetpmu::v1::PcpuGroup;
using fleetpmu::v1::ServerConfig;
using fleetpmu::v1::ShimConfig;
using fleetpmu::v1::SimHost;
using fleetpmu::v1::Workload;

constexpr int64_t kNanosPerMicro = 1000;
constexpr int64_t kNanosPerMilli = 1000 * kNanosPerMicro;
constexpr int64_t kSecondsPerHour = 3600;
constexpr int64_t kSecondsPerDay = 24 * kSecondsPerHour;

// A Duration counts as unset only when absent: an explicit 0s is a setting, which validation
// accepts or refuses.
void SetDuration(google::protobuf::Duration* d, int64_t seconds, int32_t nanos) {
  d->set_seconds(seconds);
  d->set_nanos(nanos);
}

void ApplyPcpuGroupDefaults(PcpuGroup* group) {
  if (group->count() == 0) group->set_count(1);
  if (!group->has_n_counters()) group->set_n_counters(kDefaultSimCounters);
  if (group->pmu_id().empty()) group->set_pmu_id("armv8_pmuv3_0");
  if (group->cpu_model().empty()) group->set_cpu_model("sim");
}

void ApplyWorkloadDefaults(Workload* workload) {
  if (workload->kind() == Workload::KIND_UNSPECIFIED) workload->set_kind(Workload::COUNTING);
  if (workload->events().empty()) {
    workload->add_events(0x08);  // INST_RETIRED
    workload->add_events(0x11);  // CPU_CYCLES
  }
  if (workload->sample_period() == 0) workload->set_sample_period(1000000);
  if (!workload->has_handler_latency()) {
    SetDuration(workload->mutable_handler_latency(), 0, 5 * kNanosPerMicro);
  }
  if (workload->event_rate_hz() == 0) workload->set_event_rate_hz(1000000000);
  // run_between_halts stays unset: "never halts" is its default.
  if (!workload->has_halt_duration()) {
    SetDuration(workload->mutable_halt_duration(), 0, kNanosPerMilli);
  }
}

void ApplySimDefaults(SimHost* sim) {
  if (sim->host_id().empty()) sim->set_host_id("sim-host");
  if (sim->pcpu_groups().empty()) {
    PcpuGroup* group = sim->add_pcpu_groups();
    group->set_count(4);
    group->set_fgt(true);
    group->set_hpmn0(true);
    group->set_p5(true);
  }
  for (PcpuGroup& group : *sim->mutable_pcpu_groups()) ApplyPcpuGroupDefaults(&group);
  if (sim->reservation_mode() == fleetpmu::v1::RESERVATION_MODE_UNSPECIFIED) {
    sim->set_reservation_mode(fleetpmu::v1::RESERVATION_MODE_STATIC);
  }
  if (!sim->has_time_slice()) SetDuration(sim->mutable_time_slice(), 0, 4 * kNanosPerMilli);
  if (!sim->has_migration_probability()) sim->set_migration_probability(0.01);
  if (!sim->has_speed()) sim->set_speed(1.0);
  // duration stays unset: "run until stopped".

  const uint32_t smallest_n = SmallestCounterCount(*sim);
  for (fleetpmu::v1::SimVm& vm : *sim->mutable_vms()) {
    if (vm.vcpus() == 0) vm.set_vcpus(1);
    // Half for the guest, half for the host: a tenant gets real counters and host profiling
    // keeps working.
    if (!vm.has_h()) vm.set_h(smallest_n / 2);
    if (vm.policy() == fleetpmu::v1::POLICY_UNSPECIFIED) {
      vm.set_policy(fleetpmu::v1::POLICY_REVIEWED);
    }
    if (vm.implementation() == fleetpmu::v1::PMU_IMPLEMENTATION_UNSPECIFIED) {
      vm.set_implementation(fleetpmu::v1::PMU_IMPLEMENTATION_PARTITIONED);
    }
    ApplyWorkloadDefaults(vm.mutable_workload());
  }
}

void ApplyCanaryDefaults(CanaryParams* canary) {
  if (canary->events().empty()) canary->add_events(0x08);  // INST_RETIRED
  if (canary->sample_period() == 0) canary->set_sample_period(100000);
  if (canary->wraps() == 0) canary->set_wraps(1000);
  if (!canary->has_use_cycle_counter()) canary->set_use_cycle_counter(true);
  if (canary->cycle_sample_period() == 0) canary->set_cycle_sample_period(canary->sample_period());
  if (!canary->has_timeout()) SetDuration(canary->mutable_timeout(), 30, 0);
}

void ApplyKvmDefaults(KvmHost* kvm) {
  if (kvm->kvm_device().empty()) kvm->set_kvm_device("/dev/kvm");
  if (kvm->kernel_policy() == fleetpmu::v1::POLICY_UNSPECIFIED) {
    kvm->set_kernel_policy(fleetpmu::v1::POLICY_REVIEWED);
  }
  if (kvm->reservation_mode() == fleetpmu::v1::RESERVATION_MODE_UNSPECIFIED) {
    kvm->set_reservation_mode(fleetpmu::v1::RESERVATION_MODE_STATIC);
  }
  for (fleetpmu::v1::KvmVm& vm : *kvm->mutable_vms()) {
    if (vm.vcpus() == 0) vm.set_vcpus(1);
    // h stays unset: half of the real N, known only when the VM starts.
    if (vm.memory_mib() == 0) vm.set_memory_mib(16);
    ApplyCanaryDefaults(vm.mutable_canary());
  }
}

}  // namespace

uint32_t SmallestCounterCount(const SimHost& sim) {
  if (sim.pcpu_groups().empty()) return kDefaultSimCounters;
  uint32_t smallest = UINT32_MAX;
  for (const PcpuGroup& group : sim.pcpu_groups()) {
    smallest = std::min(smallest, group.has_n_counters() ? group.n_counters()
                                                         : kDefaultSimCounters);
  }
  return smallest;
}

void ApplyShimDefaults(ShimConfig* config) {
  if (config->shim_id().empty()) config->set_shim_id("fleetpmu-shim");
  if (config->backend() == fleetpmu::v1::BACKEND_UNSPECIFIED) {
    config->set_backend(fleetpmu::v1::BACKEND_SIM);
  }
  if (config->agent_socket().empty()) config->set_agent_socket(kDefaultShimSocket);
  if (!config->has_report_interval()) SetDuration(config->mutable_report_interval(), 10, 0);
  if (config->telemetry_ring_capacity() == 0) config->set_telemetry_ring_capacity(4096);
  // Only the selected backend's block gets defaults; a block for the other backend is a
  // mistake that validation reports, not something to fill in.
  if (config->backend() == fleetpmu::v1::BACKEND_SIM) ApplySimDefaults(config->mutable_sim());
  if (config->backend() == fleetpmu::v1::BACKEND_KVM) ApplyKvmDefaults(config->mutable_kvm());
}

void ApplyAgentDefaults(AgentConfig* config) {
  if (config->shim_socket().empty()) config->set_shim_socket(kDefaultShimSocket);
  if (config->shim_socket_mode() == 0) config->set_shim_socket_mode(0660);
  if (config->spool_path().empty()) config->set_spool_path("/var/lib/fleetpmu/agent-spool.db");
  if (config->spool_max_bytes() == 0) config->set_spool_max_bytes(uint64_t{256} << 20);
  if (config->spool_overflow_policy() == fleetpmu::v1::SPOOL_OVERFLOW_POLICY_UNSPECIFIED) {
    config->set_spool_overflow_policy(fleetpmu::v1::SPOOL_OVERFLOW_POLICY_DROP_OLDEST);
  }
  if (config->batch_max_bytes() == 0) config->set_batch_max_bytes(1 << 20);
  if (config->batch_max_records() == 0) config->set_batch_max_records(64);
  if (!config->has_batch_max_delay()) SetDuration(config->mutable_batch_max_delay(), 1, 0);
  if (!config->has_backoff_min()) {
    SetDuration(config->mutable_backoff_min(), 0, 200 * kNanosPerMilli);
  }
  if (!config->has_backoff_max()) SetDuration(config->mutable_backoff_max(), 30, 0);
  if (config->metrics_listen().empty()) config->set_metrics_listen(kDefaultAgentMetricsListen);
}

void ApplyServerDefaults(ServerConfig* config) {
  if (config->ingest_listen().empty()) config->set_ingest_listen(kDefaultServerIngestListen);
  if (config->query_listen().empty()) config->set_query_listen(kDefaultServerQueryListen);
  if (config->metrics_listen().empty()) config->set_metrics_listen(kDefaultServerMetricsListen);

  fleetpmu::v1::StorageConfig* storage = config->mutable_storage();
  if (storage->sqlite_path().empty()) storage->set_sqlite_path("/var/lib/fleetpmu/fleetpmu.db");
  if (!storage->has_raw_retention()) {
    SetDuration(storage->mutable_raw_retention(), 48 * kSecondsPerHour, 0);
  }
  if (!storage->has_rollup_interval()) SetDuration(storage->mutable_rollup_interval(), 60, 0);
  if (!storage->has_rollup_retention()) {
    SetDuration(storage->mutable_rollup_retention(), 90 * kSecondsPerDay, 0);
  }

  if (config->has_tls() && !config->tls().has_require_client_cert()) {
    config->mutable_tls()->set_require_client_cert(true);
  }

  fleetpmu::v1::ServerLimits* limits = config->mutable_limits();
  if (limits->max_streams() == 0) limits->set_max_streams(1024);
  if (limits->max_message_bytes() == 0) limits->set_max_message_bytes(4 << 20);
  if (limits->max_batch_records() == 0) limits->set_max_batch_records(1000);
  if (limits->per_stream_batches_per_second() == 0) {
    limits->set_per_stream_batches_per_second(20);
  }
}

}  // namespace fleetpmu::config
