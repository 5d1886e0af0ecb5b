#!/usr/bin/env bash
# Fetches what the emulated ARM host test boots: Debian arm64 kernels (bookworm's 6.1 and the
# newest trixie-backports 7.x) and busybox-static:arm64 for the initramfs shell.
#
# Uses a private apt configuration (own sources list with [arch=arm64], own state and cache
# folders via -o options) that reuses the Debian mirror URI already configured in the machine's
# apt sources. It never edits the system's sources and installs nothing system-wide: packages
# are downloaded and unpacked with dpkg -x into the cache folder.
#
# Usage: fetch-kernels.sh [--net-modules] [CACHE_DIR]   (default: <repo>/build-emu/cache, gitignored)
#   --net-modules  also the trixie-backports kernel's virtio_net module and the modules it needs
#                  (Debian builds them as modules; from its linux-modules package, ~85 MB), for
#                  a guest with a NIC (make-arm-root.sh)
# Prints one line per artifact; idempotent: what is already there is not fetched again.
# Result layout:
#   CACHE_DIR/kernels/<suite>/Image      uncompressed arm64 kernel image (QEMU -kernel)
#   CACHE_DIR/kernels/<suite>/version    the kernel package version it came from
#   CACHE_DIR/busybox/bin/busybox        static arm64 busybox
#   CACHE_DIR/kernels/<suite>/modules/   with --net-modules: *.ko (uncompressed) and load-order,
#                                        the files to insmod, dependencies first
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
net_modules=0
if [[ "${1:-}" == --net-modules ]]; then net_modules=1; shift; fi
cache="${1:-$repo/build-emu/cache}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
apt_dir="$cache/apt"

log() { echo "fetch-kernels: $*" >&2; }
die() { log "error: $*"; exit 1; }

# mirror_uri: the Debian mirror the machine already uses.
source "$(dirname "$0")/debian-mirror.sh"

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r "$keyring" ]] || die "$keyring is missing (apt-get install debian-archive-keyring)"

mirror="$(mirror_uri)"
mkdir -p "$apt_dir"/{state/lists/partial,cache/archives/partial,etc/sources.list.d,etc/preferences.d,debs}
: >"$apt_dir/state/status"
cat >"$apt_dir/etc/sources.list" <<SOURCES
deb [arch=arm64 signed-by=$keyring] $mirror bookworm main
deb [arch=arm64 signed-by=$keyring] $mirror trixie main
deb [arch=arm64 signed-by=$keyring] $mirror trixie-backports main
SOURCES

apt_opts=(
  -o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
  -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
  -o "Dir::Etc::Preferences=$apt_dir/etc/preferences"
  -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
  -o "Dir::State=$apt_dir/state"
  -o "Dir::State::status=$apt_dir/state/status"
  -o "Dir::Cache=$apt_dir/cache"
  -o "APT::Architecture=arm64"
  -o "APT::Architectures::=arm64"
  -o "Debug::NoLocking=1"
  -o "APT::Get::List-Cleanup=0"
  # Downloads land in our own folder, which the _apt sandbox user may not be able to write.
  -o "APT::Sandbox::User=root"
)

# Refresh the private lists at most once a day.
stamp="$apt_dir/state/updated"
if [[ ! -e "$stamp" || -n "$(find "$stamp" -mmin +1440)" ]]; then
  log "apt-get update (private arm64 lists from $mirror)"
  apt-get "${apt_opts[@]}" -qq update >&2 || die "apt-get update with the private arm64 sources failed"
  touch "$stamp"
fi

# Highest version of package $1 available in suite $2 (by apt's version order).
candidate() {
  apt-cache "${apt_opts[@]}" show "$1" 2>/dev/null | awk -v want="$2" '
    /^Package:/ {pkg = $2} /^Version:/ {ver = $2}
    /^$/ {if (ver != "") print ver; ver = ""} END {if (ver != "") print ver}' |
    while read -r v; do
      # Keep only versions served by the wanted suite.
      if apt-cache "${apt_opts[@]}" madison "$1" 2>/dev/null | awk -F'|' -v v="$v" -v s="$2" \
           '{gsub(/ /, "", $2); if ($2 == v && $3 ~ (" " s "/")) found = 1} END {exit !found}'; then
        echo "$v"
      fi
    done | sort -V | tail -n 1
}

download() {  # package=version -> path of the .deb
  local spec="$1"
  (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download "$spec" >&2) || die "apt-get download $spec failed"
  local name="${spec%%=*}" version="${spec#*=}"
  ls "$apt_dir/debs/${name}_${version//:/%3a}_arm64.deb"
}

# Kernel of a suite: resolve linux-image-arm64 (metapackage) to the package holding vmlinuz.
fetch_kernel() {
  local suite="$1" want_major="$2" dest="$cache/kernels/$1"
  if [[ -s "$dest/Image" && -s "$dest/version" ]]; then
    log "$suite: cached $(cat "$dest/version")"
    return
  fi
  local meta_version deps image_pkg
  meta_version="$(candidate linux-image-arm64 "$suite")"
  [[ -n "$meta_version" ]] || die "no linux-image-arm64 in $suite"
  deps="$(apt-cache "${apt_opts[@]}" show "linux-image-arm64=$meta_version" | awk -F': ' '/^Depends:/ {print $2; exit}')"
  image_pkg="$(tr ',' '\n' <<<"$deps" | sed 's/^ *//; s/ .*//' | grep -E '^linux-image-[0-9]' | head -n 1)"
  [[ -n "$image_pkg" ]] || die "linux-image-arm64=$meta_version in $suite names no linux-image-<version> package"
  [[ "$image_pkg" == linux-image-"$want_major".* ]] || die "$suite: $image_pkg is not a $want_major.x kernel"
  local image_version tmp deb vmlinuz
  image_version="$(candidate "$image_pkg" "$suite")"
  tmp="$(mktemp -d "$cache/unpack.XXXXXX")"
  deb="$(download "$image_pkg=$image_version")"
  dpkg -x "$deb" "$tmp"
  vmlinuz="$(find "$tmp" -path '*/boot/vmlinuz-*' | head -n 1 || true)"
  if [[ -z "$vmlinuz" ]]; then
    # From 7.x the kernel file is in linux-binary-<version>-arm64, a dependency of the image.
    local binary_pkg
    binary_pkg="$(apt-cache "${apt_opts[@]}" show "$image_pkg=$image_version" | awk -F': ' '/^Depends:/ {print $2; exit}' |
      tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -E '^linux-binary-' | head -n 1)"
    [[ -n "$binary_pkg" ]] || die "$image_pkg has no /boot/vmlinuz and names no linux-binary-* package"
    deb="$(download "$binary_pkg=$(candidate "$binary_pkg" "$suite")")"
    dpkg -x "$deb" "$tmp"
    # There it is usr/lib/modules/<version>/vmlinuz.
    vmlinuz="$(find "$tmp" \( -path '*/boot/vmlinuz-*' -o -path '*/lib/modules/*/vmlinuz' \) | head -n 1 || true)"
    [[ -n "$vmlinuz" ]] || die "$binary_pkg has neither boot/vmlinuz-* nor lib/modules/*/vmlinuz"
  fi
  mkdir -p "$dest"
  # Debian's arm64 vmlinuz is a gzip-compressed Image; QEMU's -kernel takes the raw Image.
  if gzip -t "$vmlinuz" 2>/dev/null; then
    gzip -dc "$vmlinuz" >"$dest/Image.tmp"
  else
    cp "$vmlinuz" "$dest/Image.tmp"
  fi
  mv "$dest/Image.tmp" "$dest/Image"
  echo "$image_pkg $image_version (${vmlinuz#"$tmp"/})" >"$dest/version"
  rm -rf "$tmp"
  log "$suite: $(cat "$dest/version")"
}

fetch_busybox() {
  local dest="$cache/busybox"
  if [[ -x "$dest/bin/busybox" ]]; then
    log "busybox-static:arm64: cached"
    return
  fi
  local tmp deb
  tmp="$(mktemp -d "$cache/unpack.XXXXXX")"
  deb="$(download "busybox-static=$(candidate busybox-static bookworm)")"
  dpkg -x "$deb" "$tmp"
  mkdir -p "$dest/bin"
  cp "$tmp/bin/busybox" "$dest/bin/busybox"
  rm -rf "$tmp"
  log "busybox-static:arm64: $(basename "$deb")"
}

# virtio_net and what it needs, from the linux-modules package of the suite's kernel. The
# package has no modules.dep (depmod makes it at install): each module's `depends=` (its
# .modinfo section) names the modules it needs; they are loaded first. Stored uncompressed, so
# that any insmod can load them.
fetch_net_modules() {
  local suite="$1" dest="$cache/kernels/$1/modules"
  if [[ -s "$dest/load-order" ]]; then
    log "$suite: virtio_net modules cached"
    return
  fi
  local image_pkg image_version kver tmp deb moddir
  read -r image_pkg image_version _ <"$cache/kernels/$suite/version"
  kver="${image_pkg#linux-image-}"
  tmp="$(mktemp -d "$cache/unpack.XXXXXX")"
  deb="$(download "linux-modules-$kver=$image_version")"
  dpkg -x "$deb" "$tmp"
  moddir="$(find "$tmp" -type d -path "*/lib/modules/$kver" | head -n 1)"
  [[ -n "$moddir" ]] || { rm -rf "$tmp"; die "linux-modules-$kver has no lib/modules/$kver"; }
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp"
  local -A loaded=()
  add_module() {  # add_module NAME: its dependencies, then itself, each once
    local name="$1" file plain deps dep
    [[ -n "${loaded[$name]:-}" ]] && return 0
    loaded[$name]=1
    file="$(find "$moddir" -name "$name.ko*" | head -n 1)"
    [[ -n "$file" ]] || { rm -rf "$tmp"; die "linux-modules-$kver has no $name module"; }
    plain="$dest.tmp/$name.ko"
    case "$file" in
      *.xz) xz -dc "$file" >"$plain" ;;
      *.zst) zstd -qdc "$file" >"$plain" ;;
      *.gz) gzip -dc "$file" >"$plain" ;;
      *) cp "$file" "$plain" ;;
    esac
    deps="$(tr '\0' '\n' <"$plain" | sed -n 's/^depends=//p' | head -n 1)"
    for dep in ${deps//,/ }; do add_module "${dep//-/_}"; done
    echo "$name.ko" >>"$dest.tmp/load-order"
  }
  add_module virtio_net
  rm -rf "$dest" "$tmp"
  mv "$dest.tmp" "$dest"
  log "$suite: $(tr '\n' ' ' <"$dest/load-order")from linux-modules-$kver"
}

fetch_kernel bookworm 6
fetch_kernel trixie-backports 7
fetch_busybox
if [[ $net_modules -eq 1 ]]; then
  fetch_net_modules trixie-backports
  echo "modules trixie-backports $cache/kernels/trixie-backports/modules"
fi
for suite in bookworm trixie-backports; do
  echo "kernel $suite $cache/kernels/$suite/Image $(cat "$cache/kernels/$suite/version")"
done
echo "busybox $cache/busybox/bin/busybox"
