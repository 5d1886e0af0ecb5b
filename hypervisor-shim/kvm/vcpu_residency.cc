#include "hypervisor-shim/kvm/vcpu_residency.h"

#include <linux/perf_event.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

namespace fleetpmu::kvm {
namespace {

uint64_t ThreadCpuNs() {
  struct timespec ts = {};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// The calling thread's on-CPU time on `cpu` only (pid = this thread, cpu = that CPU).
int OpenTaskClock(int cpu) {
  struct perf_event_attr attr = {};
  attr.size = sizeof(attr);
  attr.type = PERF_TYPE_SOFTWARE;
  attr.config = PERF_COUNT_SW_TASK_CLOCK;
  const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  return static_cast<int>(syscall(SYS_perf_event_open, &attr, tid, cpu, -1, PERF_FLAG_FD_CLOEXEC));
}

}  // namespace

const char* ResidencyMethodName(ResidencyMethod method) {
  switch (method) {
    case ResidencyMethod::kPerfTaskClock: return "perf_task_clock";
    case ResidencyMethod::kSampledAtExits: return "sampled_at_exits";
    case ResidencyMethod::kNone: break;
  }
  return "none";
}

void VcpuResidency::Start(const std::vector<int>& cpus) {
  clocks_.clear();
  for (int cpu : cpus) {
    const int fd = OpenTaskClock(cpu);
    if (fd < 0) {  // no perf (or not allowed): fall back to sampling at exits, on every CPU
      clocks_.clear();
      break;
    }
    clocks_.push_back(CpuClock{cpu, UniqueFd(fd)});
  }
  if (!clocks_.empty()) {
    method_ = ResidencyMethod::kPerfTaskClock;
    return;
  }
  method_ = ResidencyMethod::kSampledAtExits;
  const int max_cpu = cpus.empty() ? 0 : *std::max_element(cpus.begin(), cpus.end());
  sampled_ns_.assign(static_cast<size_t>(std::max(max_cpu, 0)) + 1, 0);
}

void VcpuResidency::BeforeRun() {
  if (method_ == ResidencyMethod::kSampledAtExits) run_start_cpu_ns_ = ThreadCpuNs();
}

void VcpuResidency::AfterRun() {
  if (method_ != ResidencyMethod::kSampledAtExits) return;
  const int cpu = sched_getcpu();
  if (cpu >= 0 && static_cast<size_t>(cpu) < sampled_ns_.size()) {
    sampled_ns_[static_cast<size_t>(cpu)] += ThreadCpuNs() - run_start_cpu_ns_;
  }
}

std::map<int, uint64_t> VcpuResidency::Stop() {
  std::map<int, uint64_t> ns;
  if (method_ == ResidencyMethod::kPerfTaskClock) {
    for (CpuClock& clock : clocks_) {
      uint64_t value = 0;
      if (read(clock.fd.get(), &value, sizeof(value)) == static_cast<ssize_t>(sizeof(value)) && value > 0) {
        ns[clock.cpu] = value;
      }
      clock.fd.Reset();
    }
    clocks_.clear();
  } else if (method_ == ResidencyMethod::kSampledAtExits) {
    for (size_t cpu = 0; cpu < sampled_ns_.size(); ++cpu) {
      if (sampled_ns_[cpu] > 0) ns[static_cast<int>(cpu)] = sampled_ns_[cpu];
    }
  }
  return ns;
}

}  // namespace fleetpmu::kvm
