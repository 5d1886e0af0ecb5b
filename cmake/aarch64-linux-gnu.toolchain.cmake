# Cross-compiling for arm64 (aarch64) Linux on a Debian amd64 machine with multiarch packages:
# the compiler from crossbuild-essential-arm64, the libraries as :arm64 packages in
# /usr/lib/aarch64-linux-gnu, and test binaries run by qemu-aarch64-static. The `arm64` preset
# uses this file; deploy/install-cross-deps.sh installs what it needs (docs/arm64.md).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
# Makes find_library and find_package look in lib/aarch64-linux-gnu (Debian multiarch) instead of
# the build machine's lib/x86_64-linux-gnu.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# The host's pkg-config answers with /usr/lib/x86_64-linux-gnu, which FindOpenSSL, FindCURL and
# gRPC's re2 lookup would then link; the triplet-named one (pkgconf:arm64) answers for arm64.
set(PKG_CONFIG_EXECUTABLE aarch64-linux-gnu-pkg-config CACHE FILEPATH "pkg-config for the target")

# prometheus-cpp-dev is not co-installable for two architectures; its arm64 build is unpacked into
# this private folder by deploy/install-cross-deps.sh. Searched first, then the real root (where
# the :arm64 packages live, next to the amd64 ones).
if(DEFINED ENV{FLEETPMU_ARM64_SYSROOT})
  set(FLEETPMU_ARM64_SYSROOT $ENV{FLEETPMU_ARM64_SYSROOT})
else()
  get_filename_component(FLEETPMU_ARM64_SYSROOT ${CMAKE_CURRENT_LIST_DIR}/../build-arm64-sysroot ABSOLUTE)
endif()
if(NOT EXISTS ${FLEETPMU_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu/cmake/prometheus-cpp)
  message(FATAL_ERROR "No arm64 prometheus-cpp in ${FLEETPMU_ARM64_SYSROOT}: run deploy/install-cross-deps.sh")
endif()
set(CMAKE_FIND_ROOT_PATH ${FLEETPMU_ARM64_SYSROOT})
# Programs run on the build machine (protoc, grpc_cpp_plugin, openssl, ...). Libraries, headers and
# packages: the private folder first, then the usual prefixes (BOTH), where the architecture is
# told apart by CMAKE_LIBRARY_ARCHITECTURE.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# ctest, gtest_discover_tests and add_custom_command run arm64 binaries through user-mode QEMU,
# so binfmt_misc need not be mounted. No -L: the dynamic loader and libc come from the multiarch
# libc6:arm64 package in /lib/aarch64-linux-gnu; -L /usr/aarch64-linux-gnu would mix the cross
# toolchain's glibc with it and hangs at the first thread.
if(EXISTS /usr/bin/qemu-aarch64-static)
  set(CMAKE_CROSSCOMPILING_EMULATOR /usr/bin/qemu-aarch64-static)
else()
  set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static)
endif()
