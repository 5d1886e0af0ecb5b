#!/usr/bin/env bash
# Installs the Debian 12 (bookworm) packages fleetpmu needs to build, test and demo.
# Idempotent: packages already present are not touched and apt is not called at all.
# Usage: deploy/install-deps.sh [--dry-run]
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  # libraries (all from Debian; nothing vendored)
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libsqlite3-dev sqlite3 prometheus-cpp-dev libssl-dev zlib1g-dev nlohmann-json3-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev openssl python3 curl
  # end-to-end: real Prometheus and Alertmanager
  prometheus prometheus-alertmanager
  # deploy tests: systemd-analyze (units), YAML (manifests, compose), dpkg-shlibdeps (.debs)
  systemd python3-yaml dpkg-dev
)

native=$(dpkg --print-architecture)
missing=()
for p in "${packages[@]}"; do
  # One line per installed architecture (the arm64 cross build adds :arm64 twins): the native
  # or an architecture-independent one must be there.
  if ! dpkg-query -W -f='${Status} ${Architecture}\n' "$p" 2>/dev/null | grep -qE "^install ok installed ($native|all)$"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
if [[ "${1:-}" == "--dry-run" ]]; then exit 0; fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
