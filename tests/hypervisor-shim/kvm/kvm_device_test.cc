#include "hypervisor-shim/kvm/kvm_device.h"

#include "gtest/gtest.h"

namespace fleetpmu::kvm {
namespace {

TEST(KvmDeviceTest, CommandLineModeWins) {
  EXPECT_EQ(ParseKvmMode("console=ttyAMA0 kvm-arm.mode=nvhe quiet", "kvm [1]: VHE mode initialized successfully"),
            KvmMode::kNvhe);
  EXPECT_EQ(ParseKvmMode("kvm-arm.mode=protected", ""), KvmMode::kProtected);
}

TEST(KvmDeviceTest, KernelLogTellsTheModeKvmCameUpIn) {
  EXPECT_EQ(ParseKvmMode("console=ttyAMA0", "[ 2.09] kvm [1]: VHE mode initialized successfully\n"), KvmMode::kVhe);
  EXPECT_EQ(ParseKvmMode("", "kvm [1]: Hyp mode initialized successfully"), KvmMode::kNvhe);
  EXPECT_EQ(ParseKvmMode("", "kvm [1]: Protected nVHE mode initialized successfully"), KvmMode::kProtected);
}

TEST(KvmDeviceTest, NothingToGoByIsUnknown) {
  EXPECT_EQ(ParseKvmMode("console=ttyAMA0", ""), KvmMode::kUnknown);
  EXPECT_STREQ(KvmModeName(KvmMode::kUnknown), "unknown");
}

}  // namespace
}  // namespace fleetpmu::kvm
