#!/usr/bin/env bash
# The root file system of the emulated ARM host: a Debian bookworm arm64 root made by mmdebstrap
# (variant apt) into which apt installs the project's own arm64 packages (cpack of the arm64
# build: fleetpmu-agent = agent + shim + fleetpmu-pmu with its /etc/fleetpmu configs), plus
# mount, kmod and iproute2 (not in the apt variant), the trixie-backports kernel's virtio_net
# modules (fetch-kernels.sh --net-modules) and an /init (arm-root-init.sh). Packed as an
# uncompressed newc cpio: the kernel unpacks it into its rootfs, so no block or 9p driver
# (modules in Debian's kernel) is needed to boot it.
#
# Two steps, each cached in <out>:
#   base-<key>/   mmdebstrap's root with the packages' dependencies (their Depends fields) and
#                 the extra tools already installed (~75 s under qemu-user, more on a busy
#                 machine); key: the Depends lines, the extra packages, suite, mirror, `recipe`.
#                 Made again only when a dependency changes.
#   <key>/root.cpio  a copy of the base in which `apt-get install ./fleetpmu-agent_*.deb` runs
#                 in a chroot (a few seconds: the dependencies are there, so nothing is
#                 downloaded), plus /init and the modules; key: the .debs' control archives
#                 (their md5sums name every file's content, unlike the .deb bytes, which cpack
#                 stamps with the time), the base, arm-root-init.sh and the modules.
# A rerun with the same packages costs one cpack (~2 s). Older keys are removed.
#
# The arm64 maintainer scripts run under qemu-user: binfmt_misc is mounted and qemu-aarch64
# registered (from /usr/lib/binfmt.d/qemu-aarch64.conf) when they are not. The mirror is the one
# the machine's apt sources already use (debian-mirror.sh); the system's apt configuration is
# not touched.
#
# Usage: make-arm-root.sh [--build DIR] [--cache DIR] [--out DIR]
#   --build DIR  arm64 build tree with CPackConfig.cmake (default <repo>/build-arm64)
#   --cache DIR  fetch-kernels.sh cache (default <repo>/build-emu/cache)
#   --out DIR    where the roots are kept (default <repo>/build-emu/arm-root)
# Prints "root <path to root.cpio>" and "key <key>"; timings go to stderr.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="$repo/build-arm64" cache="$repo/build-emu/cache" out="$repo/build-emu/arm-root"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --cache) cache="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "make-arm-root: unknown argument $1" >&2; exit 2 ;;
  esac
done
suite=bookworm
includes=kmod,iproute2,mount
# Bump when the mmdebstrap invocation below changes what goes into the root (the cache key).
recipe=1
log() { echo "make-arm-root: $*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

for tool in mmdebstrap cpack cpio dpkg-deb; do
  command -v "$tool" >/dev/null || die "$tool is missing (deploy/install-deps.sh installs the emulation tools)"
done
[[ -f "$build/CPackConfig.cmake" ]] || die "no $build/CPackConfig.cmake: build the arm64 preset first (make arm64)"

"$here/fetch-kernels.sh" --net-modules "$cache" >/dev/null
modules="$cache/kernels/trixie-backports/modules"
# shellcheck source=debian-mirror.sh
source "$here/debian-mirror.sh"
mirror="$(mirror_uri)"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "$out/work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

t0=$(now)
cpack --config "$build/CPackConfig.cmake" -B "$work/debs" >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log" >&2; die "cpack failed"; }
debs=("$work"/debs/*_arm64.deb)
[[ -f "${debs[0]}" ]] || die "cpack made no arm64 .deb in $work/debs (is $build an arm64 build?)"
agent_deb="$(ls "$work"/debs/fleetpmu-agent_*_arm64.deb 2>/dev/null | head -n 1)"
[[ -n "$agent_deb" ]] || die "cpack made no fleetpmu-agent arm64 package"
log "cpack: $(cd "$work/debs" && ls -- *.deb | tr '\n' ' ')in $(since "$t0")s"

control="$work/control"
mkdir -p "$control"
dpkg-deb -e "$agent_deb" "$control"
# Package names of the Depends line (the first of each set of alternatives).
depends="$(dpkg-deb -f "$agent_deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep -v '^$' |
  sort -u | paste -sd, -)"
base_key="$(echo "$suite $mirror $includes $depends recipe $recipe" | sha256sum | cut -c1-16)"
base="$out/base-$base_key"
key="$( {
  (cd "$control" && sha256sum -- *)
  echo "$base_key"
  cat "$here/arm-root-init.sh" | sha256sum
  (cd "$modules" && sha256sum -- *)
} | sha256sum | cut -c1-16)"
root_cpio="$out/$key/root.cpio"
if [[ -s "$root_cpio" ]]; then
  log "cached root $key"
  echo "root $root_cpio"
  echo "key $key"
  exit 0
fi

# qemu-user for the arm64 programs that run in the chroot.
binfmt=/proc/sys/fs/binfmt_misc
if [[ ! -e "$binfmt/register" ]]; then
  mount -t binfmt_misc binfmt_misc "$binfmt" || die "cannot mount binfmt_misc at $binfmt"
fi
if [[ ! -e "$binfmt/qemu-aarch64" ]]; then
  [[ -r /usr/lib/binfmt.d/qemu-aarch64.conf ]] || die "qemu-user-static has no /usr/lib/binfmt.d/qemu-aarch64.conf"
  cat /usr/lib/binfmt.d/qemu-aarch64.conf >"$binfmt/register" || die "cannot register qemu-aarch64 in binfmt_misc"
fi

if [[ -d "$base/root" ]]; then
  log "cached base $base_key ($depends)"
else
  t1=$(now)
  # --mode=root: this runs as root (in a container too); the arm64 chroot runs under qemu-user.
  # force-unsafe-io: no fsync per file, the root is rebuilt from scratch if anything breaks.
  mmdebstrap --mode=root --variant=apt --architectures=arm64 --include="$includes,$depends" \
    --aptopt='Acquire::Languages "none"' --dpkgopt=force-unsafe-io \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$suite" "$work/base" "$mirror" >"$work/mmdebstrap.log" 2>&1 ||
    { tail -n 40 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
  rm -rf "$out"/base-*
  mkdir -p "$base"
  mv "$work/base" "$base/root"
  log "mmdebstrap ($suite arm64 with $includes and the dependencies of $(basename "$agent_deb")) in $(since "$t1")s, $(du -sh "$base/root" | cut -f1)"
fi

t2=$(now)
root="$work/root"
cp -a "$base/root" "$root"
cp "$agent_deb" "$root/tmp/"
# apt in the chroot with /proc and /dev mounted in a mount namespace of its own: nothing stays
# mounted when it ends.
unshare --mount --propagation private -- sh -c 'mount -t proc proc "$1/proc" && mount --bind /dev "$1/dev" &&
  exec chroot "$1" apt-get install -y --no-install-recommends "/tmp/$2"' \
  sh "$root" "$(basename "$agent_deb")" >"$work/apt.log" 2>&1 ||
  { tail -n 30 "$work/apt.log" >&2; die "apt-get install ./$(basename "$agent_deb") failed in the arm64 root"; }
installed="$(chroot "$root" dpkg-query -W -f='${Package}=${Version} ${Status}' fleetpmu-agent)"
[[ "$installed" == *"install ok installed" ]] || die "fleetpmu-agent is not installed in the root: $installed"
rm -f "$root"/tmp/*.deb "$root"/var/cache/apt/*.bin
cp "$here/arm-root-init.sh" "$root/init"
chmod 755 "$root/init"
mkdir -p "$root/usr/lib/fleetpmu-emu/modules"
cp "$modules"/* "$root/usr/lib/fleetpmu-emu/modules/"
echo arm-emu >"$root/etc/hostname"
log "apt-get install ./$(basename "$agent_deb") in the root: $installed, in $(since "$t2")s"

t3=$(now)
mkdir -p "$out/$key.tmp"
(cd "$root" && find . -xdev -print0 | cpio --null -o -H newc --quiet) >"$out/$key.tmp/root.cpio"
cp "$agent_deb" "$out/$key.tmp/"
# Keep only this root (and its base): an older key is a root of packages that no longer exist.
find "$out" -mindepth 1 -maxdepth 1 -type d ! -name "$key.tmp" ! -name "base-$base_key" \
  ! -name "$(basename "$work")" -exec rm -rf {} +
mv "$out/$key.tmp" "$out/$key"
log "root.cpio $(du -h "$root_cpio" | cut -f1) in $(since "$t3")s"
echo "root $root_cpio"
echo "key $key"
