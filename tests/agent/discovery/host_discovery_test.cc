#include "agent/discovery/host_discovery.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace fleetpmu::agent {
namespace {

namespace fs = std::filesystem;

void Write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

// A prepared /sys and /proc of an arm64 host with two PMU types: real arm64 sysfs cannot be had
// on this build machine, so the tree stands in for it at this one boundary.
class HostDiscoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("fleetpmu-discovery-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    const fs::path dev = root_ / "sys/bus/event_source/devices";
    Write(dev / "armv8_pmuv3_0/type", "8\n");
    Write(dev / "armv8_pmuv3_0/cpus", "0-1\n");
    Write(dev / "armv8_pmuv3_0/caps/slots", "0x00000006\n");
    Write(dev / "armv8_pmuv3_0/events/cpu_cycles", "event=0x0011\n");
    Write(dev / "armv8_pmuv3_0/events/inst_retired", "event=0x0008\n");
    Write(dev / "software/type", "1\n");
    Write(root_ / "proc/cpuinfo",
          "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n"
          "processor\t: 1\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n\n");
  }
  void TearDown() override { fs::remove_all(root_); }
  DiscoveryRoots Roots() const {
    return {(root_ / "sys").string(), (root_ / "proc").string(), (root_ / "no-kvm").string()};
  }
  fs::path root_;
};

TEST_F(HostDiscoveryTest, ReadsPmuDevicesAndCpuModels) {
  v1::HostInfo info;
  DiscoverHost(Roots(), &info);
  ASSERT_EQ(info.pmu_devices_size(), 2);
  const v1::PmuDevice& arm = info.pmu_devices(0);
  EXPECT_EQ(arm.name(), "armv8_pmuv3_0");
  EXPECT_EQ(arm.type(), 8u);
  EXPECT_EQ(arm.cpus(), "0-1");
  EXPECT_EQ(arm.named_events(), 2u);
  EXPECT_EQ(arm.caps().at("slots"), "0x00000006");
  EXPECT_FALSE(arm.has_num_counters()) << "arm_pmu does not publish N: unknown, not 0";
  const v1::PmuDevice& sw = info.pmu_devices(1);
  EXPECT_EQ(sw.name(), "software");
  EXPECT_TRUE(sw.cpus().empty());
  ASSERT_EQ(info.cpu_models_size(), 2);
  EXPECT_EQ(info.cpu_models(0), "Neoverse-N1");
  EXPECT_EQ(info.cpu_models(1), "Neoverse-V2");
  EXPECT_TRUE(info.has_kvm_present());
  EXPECT_FALSE(info.kvm_present());
  EXPECT_FALSE(info.arch().empty());
}

TEST_F(HostDiscoveryTest, MissingTreesLeaveFactsUnknown) {
  v1::HostInfo info;
  DiscoverHost({(root_ / "nothing").string(), (root_ / "nothing").string(), (root_ / "nothing").string()}, &info);
  EXPECT_EQ(info.pmu_devices_size(), 0);
  EXPECT_EQ(info.cpu_models_size(), 0);
  EXPECT_FALSE(info.kvm_present());
}

TEST(HostDiscovery, RunsOnThisMachine) {
  v1::HostInfo info;
  DiscoverHost({}, &info);
  EXPECT_FALSE(info.kernel().empty());
  EXPECT_GT(info.cpu_models_size(), 0);
  EXPECT_TRUE(info.has_kvm_present());
  if (info.kvm_present()) {
    EXPECT_EQ(info.kvm_capabilities().at("KVM_API_VERSION"), "12");
  }
}

}  // namespace
}  // namespace fleetpmu::agent
