#!/usr/bin/env bash
# Installs what the `arm64` preset needs on a Debian 12 (bookworm) amd64 machine: the aarch64
# cross compiler, qemu-user to run the arm64 unit tests, and the arm64 builds of the libraries the
# shim and the agent link, as Debian multiarch packages (docs/arm64.md).
#
# prometheus-cpp-dev cannot be installed for amd64 and arm64 at once (it depends on the `civetweb`
# program, which is not multi-arch), so its arm64 build is downloaded and unpacked with `dpkg -x`
# into a private folder, build-arm64-sysroot/ (gitignored), which the toolchain file
# (cmake/aarch64-linux-gnu.toolchain.cmake) adds to CMAKE_FIND_ROOT_PATH.
#
# Idempotent: when everything is present, apt is not called at all. Otherwise it runs
# apt-get update, simulates the install first and refuses a transaction that would remove any
# package (installing :arm64 libraries upgrades the matching amd64 ones in lock-step, which is
# shown, but a removal is never done behind your back).
# Usage: deploy/install-cross-deps.sh [--dry-run]
#   FLEETPMU_ARM64_SYSROOT=<dir>  private folder for prometheus-cpp-dev:arm64
#                                 (default: <repo>/build-arm64-sysroot)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sysroot=${FLEETPMU_ARM64_SYSROOT:-$repo/build-arm64-sysroot}
dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; fi

# Programs that run on the build machine. protoc and grpc_cpp_plugin generate the arm64 build's
# code too (their versions equal the :arm64 libraries', Debian keeps both in lock-step).
# qemu-system-arm, mmdebstrap (with arch-test for its foreign-architecture check), cpio and
# xz-utils: the emulated ARM host of tests/emulated-arm (label `emulated`).
host_packages=(
  crossbuild-essential-arm64 qemu-user-static binfmt-support
  cmake ninja-build protobuf-compiler protobuf-compiler-grpc nlohmann-json3-dev
  qemu-system-arm mmdebstrap arch-test cpio xz-utils
)
# Libraries the shim, the agent and their unit tests link, for arm64 (nlohmann-json3-dev above is
# architecture-independent). libgtest-dev and
# libgmock-dev ship prebuilt static libraries (the native build finds them through GTestConfig),
# so they are needed for arm64 as well. The prometheus-cpp runtime libraries are installed for
# real so that the arm64 binaries run under qemu-aarch64-static and dpkg-shlibdeps can name them.
arm64_packages=(
  libgrpc++-dev libprotobuf-dev libabsl-dev libsqlite3-dev libssl-dev zlib1g-dev
  libgtest-dev libgmock-dev libcivetweb-dev libcurl4-openssl-dev
  libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0
  pkgconf  # aarch64-linux-gnu-pkg-config, which the toolchain file names
)
# Unpacked into $sysroot instead of installed: the -dev package and the libraries its CMake
# targets and .so links point at (inside the same folder).
private_packages=(
  prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0
)

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for p in "${host_packages[@]}"; do
  installed "$p" || missing+=("$p")
done
arch_ready=0
if dpkg --print-foreign-architectures | grep -qx arm64; then arch_ready=1; fi
for p in "${arm64_packages[@]}"; do
  if [[ $arch_ready -eq 0 ]] || ! installed "$p:arm64"; then missing+=("$p:arm64"); fi
done

# The private folder is current when it holds the version of the installed runtime libraries.
want_version=""
if [[ $arch_ready -eq 1 ]] && installed libprometheus-cpp-core1.0:arm64; then
  want_version=$(dpkg-query -W -f='${Version}' libprometheus-cpp-core1.0:arm64)
fi
stamp=$sysroot/.fleetpmu-unpacked
private_ready=0
if [[ -n "$want_version" && -f "$stamp" && "$(cat "$stamp")" == "prometheus-cpp-dev=$want_version" ]]; then
  private_ready=1
fi

if [[ ${#missing[@]} -eq 0 && $private_ready -eq 1 ]]; then
  echo "install-cross-deps: all ${#host_packages[@]} host and ${#arm64_packages[@]} arm64 packages present;" \
       "prometheus-cpp-dev:arm64 $want_version unpacked in $sysroot"
  exit 0
fi
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "install-cross-deps: installing ${missing[*]}"
fi
if [[ $private_ready -eq 0 ]]; then
  echo "install-cross-deps: unpacking ${private_packages[*]} (arm64) into $sysroot"
fi
if [[ $dry_run -eq 1 ]]; then exit 0; fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg run (another build on this machine) instead of failing at once.
apt_opts=(-q -o DPkg::Lock::Timeout=600)

if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $arch_ready -eq 0 ]]; then
    echo "install-cross-deps: dpkg --add-architecture arm64"
    $sudo dpkg --add-architecture arm64
  fi
  $sudo apt-get "${apt_opts[@]}" update

  simulation=$($sudo apt-get "${apt_opts[@]}" -s install --no-install-recommends "${missing[@]}")
  removals=$(grep '^Remv ' <<<"$simulation" || true)
  if [[ -n "$removals" ]]; then
    echo "install-cross-deps: refusing: installing the arm64 packages would remove:" >&2
    sed 's/^/  /' <<<"$removals" >&2
    echo "install-cross-deps: nothing was installed. Resolve the conflict by hand (docs/arm64.md)." >&2
    exit 1
  fi
  # "Inst pkg [old] (new ...)": an installed package that moves to another version, typically
  # an amd64 library upgraded in lock-step with its new :arm64 twin.
  upgrades=$(grep -E '^Inst [^ ]+ \[' <<<"$simulation" || true)
  if [[ -n "$upgrades" ]]; then
    echo "install-cross-deps: these installed packages change version (multiarch lock-step):"
    sed 's/^Inst /  /' <<<"$upgrades"
  fi
  $sudo apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
  want_version=$(dpkg-query -W -f='${Version}' libprometheus-cpp-core1.0:arm64)
fi

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "prometheus-cpp-dev=$want_version" ]]; then
  # Only ever delete a folder this script made (it holds the stamp) or an empty one.
  if [[ -d "$sysroot" && ! -f "$stamp" && -n "$(ls -A "$sysroot")" ]]; then
    echo "install-cross-deps: $sysroot exists and was not made by this script; not touching it" >&2
    exit 1
  fi
  rm -rf "$sysroot"
  debs=$sysroot/.debs
  mkdir -p "$debs"
  specs=()
  for p in "${private_packages[@]}"; do specs+=("$p:arm64=$want_version"); done
  # The download runs as the caller into a folder _apt may not read: no sandbox user. When apt
  # was not needed above, its lists may be missing (a cleaned image): update once and retry.
  download() { (cd "$debs" && apt-get -q -o APT::Sandbox::User="$(id -un)" download "${specs[@]}"); }
  if ! download; then
    $sudo apt-get "${apt_opts[@]}" update
    download
  fi
  for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$sysroot"
  done
  rm -rf "$debs"
  if [[ ! -f "$sysroot/usr/lib/aarch64-linux-gnu/cmake/prometheus-cpp/prometheus-cpp-config.cmake" ]]; then
    echo "install-cross-deps: prometheus-cpp-config.cmake missing after unpacking into $sysroot" >&2
    exit 1
  fi
  echo "prometheus-cpp-dev=$want_version" >"$stamp"
  echo "install-cross-deps: prometheus-cpp-dev:arm64 $want_version unpacked in $sysroot"
fi
