// How this backend words a failed system call: which step, which call, errno's text. Every
// ioctl failure in kvm/ goes through here so that a message says what was being done and why
// it failed (STYLE.md, after kvmtool).
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_ERROR_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_ERROR_H_

#include <cerrno>
#include <cstring>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fleetpmu::kvm {

// e.g. "creating the vGICv3 device: KVM_CREATE_DEVICE failed: No such device (ENODEV)".
inline absl::Status SyscallError(absl::string_view step, absl::string_view call, int err = errno) {
  const std::string text = absl::StrCat(step, ": ", call, " failed: ", std::strerror(err), " (",
                                        strerrorname_np(err) ? strerrorname_np(err) : "?", ")");
  switch (err) {
    case ENOENT:
    case ENODEV:
    case ENXIO:
    case ENOSYS:
    case EOPNOTSUPP:
      return absl::UnimplementedError(text);
    case EINVAL:
    case E2BIG:
      return absl::InvalidArgumentError(text);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(text);
    case EBUSY:
    case EEXIST:
      return absl::FailedPreconditionError(text);
    default:
      return absl::InternalError(text);
  }
}

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_ERROR_H_
