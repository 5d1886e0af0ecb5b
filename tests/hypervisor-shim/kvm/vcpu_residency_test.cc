#include "hypervisor-shim/kvm/vcpu_residency.h"

#include <time.h>

#include <algorithm>
#include <map>
#include <vector>

#include "gtest/gtest.h"
#include "hypervisor-shim/kvm/host_counters.h"

namespace fleetpmu::kvm {
namespace {

uint64_t ThreadCpuNs() {
  struct timespec ts = {};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Stands in for one KVM_RUN that keeps the CPU busy for `ns` of thread CPU time.
void BusyRun(VcpuResidency& residency, uint64_t ns) {
  residency.BeforeRun();
  const uint64_t until = ThreadCpuNs() + ns;
  volatile uint64_t sink = 0;
  while (ThreadCpuNs() < until) sink = sink + 1;
  residency.AfterRun();
}

TEST(VcpuResidencyTest, ChargesTheThreadsRunTimeToOnlineCpus) {
  const std::vector<int> cpus = OnlineCpus();
  ASSERT_FALSE(cpus.empty());
  VcpuResidency residency;
  residency.Start(cpus);
  // Either method works here: perf task clocks where perf_event_open does, sampling elsewhere
  // (e.g. under qemu-user).
  EXPECT_NE(residency.method(), ResidencyMethod::kNone);
  const uint64_t before = ThreadCpuNs();
  for (int i = 0; i < 5; ++i) BusyRun(residency, 10'000'000);
  const uint64_t spent = ThreadCpuNs() - before;
  const std::map<int, uint64_t> ns = residency.Stop();
  ASSERT_FALSE(ns.empty());
  uint64_t total = 0;
  for (const auto& [cpu, n] : ns) {
    EXPECT_NE(std::find(cpus.begin(), cpus.end(), cpu), cpus.end()) << "CPU " << cpu << " is not online";
    total += n;
  }
  EXPECT_GE(total, 50'000'000u * 9 / 10) << ResidencyMethodName(residency.method());
  EXPECT_LE(total, spent + 20'000'000u) << ResidencyMethodName(residency.method());
}

TEST(VcpuResidencyTest, NotStartedMeasuresNothing) {
  VcpuResidency residency;
  BusyRun(residency, 1'000'000);
  EXPECT_EQ(residency.method(), ResidencyMethod::kNone);
  EXPECT_TRUE(residency.Stop().empty());
}

}  // namespace
}  // namespace fleetpmu::kvm
