#include "hypervisor-shim/kvm/vm.h"

#include <sys/ioctl.h>
#include <linux/kvm.h>
#include <sys/mman.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "hypervisor-shim/kvm/kvm_error.h"

namespace fleetpmu::kvm {

absl::StatusOr<Vm> Vm::Create(const KvmDevice& device, std::string name, uint64_t ram_base, size_t ram_bytes) {
  const int fd = ioctl(device.fd(), KVM_CREATE_VM, 0);
  if (fd < 0) return SyscallError(absl::StrCat("VM ", name, ": creating the VM"), "KVM_CREATE_VM");
  Vm vm(UniqueFd(fd), std::move(name));
  void* ram = mmap(nullptr, ram_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (ram == MAP_FAILED) {
    return SyscallError(absl::StrCat("VM ", vm.name_, ": allocating ", ram_bytes >> 20, " MiB of guest RAM"), "mmap");
  }
  vm.ram_ = ram;
  vm.ram_base_ = ram_base;
  vm.ram_bytes_ = ram_bytes;
  struct kvm_userspace_memory_region region = {};
  region.slot = 0;
  region.guest_phys_addr = ram_base;
  region.memory_size = ram_bytes;
  region.userspace_addr = reinterpret_cast<uint64_t>(ram);
  if (ioctl(vm.fd(), KVM_SET_USER_MEMORY_REGION, &region) < 0) {
    return SyscallError(absl::StrCat("VM ", vm.name_, ": adding guest RAM at 0x", absl::Hex(ram_base)),
                        "KVM_SET_USER_MEMORY_REGION");
  }
  return vm;
}

Vm::Vm(Vm&& other) noexcept
    : fd_(std::move(other.fd_)),
      name_(std::move(other.name_)),
      ram_base_(other.ram_base_),
      ram_bytes_(other.ram_bytes_),
      ram_(std::exchange(other.ram_, nullptr)) {}

Vm::~Vm() {
  // The VM goes first: KVM may still reference the memory slot until its fd is closed.
  fd_.Reset();
  if (ram_ != nullptr) munmap(ram_, ram_bytes_);
}

absl::Status Vm::Load(uint64_t gpa, absl::Span<const uint8_t> image) {
  if (gpa < ram_base_ || gpa - ram_base_ > ram_bytes_ || image.size() > ram_bytes_ - (gpa - ram_base_)) {
    return absl::InvalidArgumentError(absl::StrCat("VM ", name_, ": an image of ", image.size(),
                                                   " bytes at 0x", absl::Hex(gpa), " does not fit the ",
                                                   ram_bytes_, " bytes of RAM at 0x", absl::Hex(ram_base_)));
  }
  std::memcpy(static_cast<uint8_t*>(ram_) + (gpa - ram_base_), image.data(), image.size());
  return absl::OkStatus();
}

}  // namespace fleetpmu::kvm
