#include "hypervisor-shim/kvm/canary_vm.h"

#include <sched.h>
#include <sys/resource.h>
#include <time.h>

#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "hypervisor-shim/kvm/canary/canary_image.h"
#include "hypervisor-shim/kvm/host_counters.h"
#include "hypervisor-shim/kvm/kvm_stats.h"
#include "hypervisor-shim/kvm/kvm_uapi.h"
#include "hypervisor-shim/kvm/vgic.h"
#include "hypervisor-shim/kvm/vm.h"

namespace fleetpmu::kvm {
namespace {

constexpr size_t kMaxConsole = 4096;

uint64_t ThreadCpuNs() {
  struct timespec ts = {};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// The report device of one vCPU (canary_protocol.h): answers params reads, stores report writes.
class ReportDevice {
 public:
  ReportDevice(const canary_params& params, CanaryVcpuResult* result) : params_(params), result_(result) {}

  bool Access(uint64_t address, bool is_write, uint8_t* data, uint32_t len) {
    if (address < CANARY_MMIO_BASE || address >= CANARY_MMIO_BASE + CANARY_MMIO_SIZE) {
      result_->error = absl::StrCat("the canary accessed 0x", absl::Hex(address), ", outside every device");
      return false;
    }
    const uint64_t offset = address - CANARY_MMIO_BASE;
    if (!is_write) {
      uint64_t value = 0;
      if (offset + len <= CANARY_PARAMS + sizeof(canary_params) && len <= 8) {
        std::memcpy(&value, reinterpret_cast<const uint8_t*>(&params_) + (offset - CANARY_PARAMS), len);
      }
      std::memcpy(data, &value, len);
      return true;
    }
    uint64_t value = 0;
    std::memcpy(&value, data, len <= 8 ? len : 8);
    if (offset >= CANARY_REPORT && offset + len <= CANARY_REPORT + sizeof(canary_report)) {
      std::memcpy(reinterpret_cast<uint8_t*>(&result_->report) + (offset - CANARY_REPORT), data, len);
      return true;
    }
    if (offset == CANARY_CONSOLE) {
      if (result_->console.size() < kMaxConsole) result_->console.push_back(static_cast<char>(value & 0xff));
      return true;
    }
    if (offset == CANARY_DONE) {
      result_->done = true;
      result_->done_status = value;
      return false;
    }
    return true;  // writes elsewhere in the device are ignored, as on real hardware
  }

 private:
  const canary_params& params_;
  CanaryVcpuResult* result_;
};

}  // namespace

canary_params MakeCanaryParams(const CanaryVmConfig& config, uint32_t h) {
  canary_params params = {};
  params.magic = CANARY_MAGIC;
  params.version = CANARY_VERSION;
  params.counters = h;
  params.use_cycle = config.use_cycle_counter ? 1 : 0;
  params.wraps = config.wraps;
  params.timeout_us = static_cast<uint64_t>(absl::ToInt64Microseconds(config.guest_timeout));
  params.grace_us = static_cast<uint64_t>(absl::ToInt64Microseconds(config.grace));
  for (uint32_t n = 0; n < CANARY_CYCLE_COUNTER; ++n) {
    if (config.events.empty()) break;
    const size_t i = n % config.events.size();
    params.event[n] = config.events[i];
    params.period[n] = i < config.periods.size() && config.periods[i] != 0 ? config.periods[i] : config.sample_period;
  }
  params.event[CANARY_CYCLE_COUNTER] = CANARY_EVENT_CPU_CYCLES;
  params.period[CANARY_CYCLE_COUNTER] = config.cycle_period != 0 ? config.cycle_period : config.sample_period;
  return params;
}

absl::StatusOr<CanaryVmResult> RunCanaryVm(const KvmDevice& device, const CanaryVmConfig& config) {
  CanaryVmResult result;
  result.config = config;
  const std::string& name = config.vm_id;
  if (config.vcpus < 1) return absl::InvalidArgumentError(absl::StrCat("VM ", name, ": needs at least one vCPU"));
  const uint64_t stacks = static_cast<uint64_t>(config.vcpus) * CANARY_STACK_BYTES;
  if (config.memory_bytes < CanaryImage().size() + stacks) {
    return absl::InvalidArgumentError(absl::StrCat("VM ", name, ": ", config.memory_bytes, " bytes of RAM hold neither the ",
                                                   CanaryImage().size(), "-byte canary nor ", config.vcpus, " stacks"));
  }

  absl::StatusOr<Vm> vm = Vm::Create(device, name, CANARY_RAM_BASE, config.memory_bytes);
  if (!vm.ok()) return vm.status();
  if (absl::Status s = vm->Load(CANARY_RAM_BASE, CanaryImage()); !s.ok()) return s;
  absl::StatusOr<Vgic> vgic = Vgic::Create(*vm, config.vcpus);
  if (!vgic.ok()) return vgic.status();

  std::vector<std::unique_ptr<Vcpu>> vcpus;
  for (int i = 0; i < config.vcpus; ++i) {
    absl::StatusOr<std::unique_ptr<Vcpu>> vcpu = Vcpu::Create(device, *vm, i);
    if (!vcpu.ok()) return vcpu.status();
    vcpus.push_back(std::move(*vcpu));
  }

  absl::StatusOr<VpmuSupport> support = ProbeVpmu(*vcpus[0], device.facts());
  if (!support.ok()) return support.status();
  result.support = *support;
  result.h = config.h.has_value() ? *config.h : support->host_n / 2;
  absl::StatusOr<CounterLimit> limit = ChooseCounterLimit(*support, result.h, name);
  if (!limit.ok()) return limit.status();
  result.limit = *limit;

  if (absl::Status s = vgic->Initialize(); !s.ok()) return s;
  VpmuConfig vpmu;
  vpmu.h = result.h;
  vpmu.limit = result.limit;
  vpmu.filter = config.filter;
  vpmu.enable_partition = config.enable_partition && support->partition;
  result.partition_enabled = vpmu.enable_partition;
  if (absl::Status s = ConfigureVmPmu(*vcpus[0], vpmu, *support); !s.ok()) return s;
  for (auto& vcpu : vcpus) {
    if (absl::Status s = ConfigureVcpuPmu(*vcpu, vpmu); !s.ok()) return s;
    const uint64_t stack_top = CANARY_RAM_BASE + config.memory_bytes - static_cast<uint64_t>(vcpu->index()) * CANARY_STACK_BYTES;
    struct EntryReg {
      uint64_t id;
      uint64_t value;
      const char* name;
    };
    for (const EntryReg& reg : {EntryReg{kRegPc, CANARY_RAM_BASE, "PC"},
                                EntryReg{kRegX0, static_cast<uint64_t>(vcpu->index()), "X0 (vCPU index)"},
                                EntryReg{kRegSpEl1, stack_top, "SP_EL1"},
                                EntryReg{kRegPstate, kPstateEl1hMasked, "PSTATE"}}) {
      if (absl::Status s = vcpu->SetReg(reg.id, reg.value, reg.name); !s.ok()) return s;
    }
  }

  result.params = MakeCanaryParams(config, result.h);
  result.vcpus.resize(vcpus.size());
  std::mutex mu;
  std::condition_variable finished_cv;
  size_t finished = 0;
  const std::vector<int> online_cpus = OnlineCpus();
  result.start_unix_ns = absl::ToUnixNanos(absl::Now());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < vcpus.size(); ++i) {
    threads.emplace_back([&, i] {
      Vcpu& vcpu = *vcpus[i];
      CanaryVcpuResult& out = result.vcpus[i];
      out.vcpu = vcpu.index();
      UniqueFd stats = vcpu.OpenStatsFd();
      struct rusage before = {}, after = {};
      getrusage(RUSAGE_THREAD, &before);
      const uint64_t cpu0 = ThreadCpuNs();
      const absl::Time t0 = absl::Now();
      ReportDevice device(result.params, &out);
      VcpuResidency residency;
      residency.Start(online_cpus);
      absl::StatusOr<VcpuStop> stop = vcpu.Run(
          [&device](uint64_t address, bool is_write, uint8_t* data, uint32_t len) {
            return device.Access(address, is_write, data, len);
          },
          &residency);
      out.resident_ns_by_cpu = residency.Stop();
      out.residency_method = residency.method();
      out.wall_ns = static_cast<uint64_t>(absl::ToInt64Nanoseconds(absl::Now() - t0));
      out.thread_cpu_ns = ThreadCpuNs() - cpu0;
      out.last_cpu = sched_getcpu();
      getrusage(RUSAGE_THREAD, &after);
      out.voluntary_switches = static_cast<uint64_t>(after.ru_nvcsw - before.ru_nvcsw);
      out.involuntary_switches = static_cast<uint64_t>(after.ru_nivcsw - before.ru_nivcsw);
      out.run_stats = vcpu.run_stats();
      if (!stop.ok()) {
        out.error = std::string(stop.status().message());
      } else if (*stop == VcpuStop::kStopRequested && !out.done) {
        out.error = absl::StrCat(vcpu.label(), ": no report within ", absl::FormatDuration(config.host_timeout),
                                 "; stopped by the VMM");
      } else if (*stop == VcpuStop::kSystemEvent && !out.done) {
        out.error = absl::StrCat(vcpu.label(), ": the guest powered off before reporting");
      }
      if (stats.valid()) {
        absl::StatusOr<std::map<std::string, uint64_t>> values = ReadKvmStats(stats.get());
        if (values.ok()) out.kvm_stats = std::move(*values);
      }
      std::lock_guard<std::mutex> lock(mu);
      ++finished;
      finished_cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    const bool all = finished_cv.wait_for(lock, absl::ToChronoNanoseconds(config.host_timeout),
                                          [&] { return finished == vcpus.size(); });
    if (!all) {
      for (auto& vcpu : vcpus) vcpu->RequestStop();
    }
  }
  for (std::thread& thread : threads) thread.join();
  result.end_unix_ns = absl::ToUnixNanos(absl::Now());
  return result;
}

absl::StatusOr<VpmuSupport> ProbeHostVpmu(const KvmDevice& device) {
  absl::StatusOr<Vm> vm = Vm::Create(device, "probe", CANARY_RAM_BASE, 64 << 10);
  if (!vm.ok()) return vm.status();
  absl::StatusOr<std::unique_ptr<Vcpu>> vcpu = Vcpu::Create(device, *vm, 0);
  if (!vcpu.ok()) return vcpu.status();
  return ProbeVpmu(**vcpu, device.facts());
}

}  // namespace fleetpmu::kvm
