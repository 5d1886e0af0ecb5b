#include "hypervisor-shim/kvm/kvm_stats.h"

#include <linux/kvm.h>
#include <unistd.h>

#include <vector>

#include "hypervisor-shim/kvm/kvm_error.h"

namespace fleetpmu::kvm {

absl::StatusOr<std::map<std::string, uint64_t>> ReadKvmStats(int stats_fd) {
#ifdef KVM_GET_STATS_FD
  struct kvm_stats_header header = {};
  if (pread(stats_fd, &header, sizeof(header), 0) != static_cast<ssize_t>(sizeof(header))) {
    return SyscallError("reading the KVM statistics header", "pread");
  }
  const size_t desc_size = sizeof(struct kvm_stats_desc) + header.name_size;
  std::vector<uint8_t> descs(desc_size * header.num_desc);
  if (pread(stats_fd, descs.data(), descs.size(), header.desc_offset) != static_cast<ssize_t>(descs.size())) {
    return SyscallError("reading the KVM statistics descriptors", "pread");
  }
  std::map<std::string, uint64_t> values;
  for (uint32_t i = 0; i < header.num_desc; ++i) {
    const auto* desc = reinterpret_cast<const struct kvm_stats_desc*>(descs.data() + i * desc_size);
    const uint32_t type = desc->flags & KVM_STATS_TYPE_MASK;
    if (type != KVM_STATS_TYPE_CUMULATIVE && type != KVM_STATS_TYPE_INSTANT && type != KVM_STATS_TYPE_PEAK) continue;
    uint64_t value = 0;
    if (pread(stats_fd, &value, sizeof(value), header.data_offset + desc->offset) != static_cast<ssize_t>(sizeof(value))) {
      return SyscallError("reading a KVM statistic", "pread");
    }
    values[std::string(desc->name, strnlen(desc->name, header.name_size))] = value;
  }
  return values;
#else
  (void)stats_fd;
  return absl::UnimplementedError("built without KVM_GET_STATS_FD");
#endif
}

}  // namespace fleetpmu::kvm
