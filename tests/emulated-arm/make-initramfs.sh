#!/usr/bin/env bash
# Builds the initramfs of the emulated ARM host: busybox-static:arm64 as the shell, an /init
# that mounts the pseudo file systems, runs /payload/run.sh and powers off, and whatever the
# caller puts in the payload folder (binaries, configs, shared libraries under their absolute
# paths).
#
# Usage: make-initramfs.sh BUSYBOX PAYLOAD_DIR OUTPUT.cpio.gz
#   BUSYBOX      static arm64 busybox (fetch-kernels.sh puts one in its cache)
#   PAYLOAD_DIR  copied to / of the initramfs as it is; must contain payload/run.sh, the script
#                the guest runs (as /bin/sh script, with the payload's bin/ on PATH)
#
# Markers on the serial console (what the host decides pass/fail from):
#   FLEETPMU-EMU: boot <uptime>        /init started
#   FLEETPMU-EMU: run.sh exit <status> the payload script returned
set -euo pipefail

busybox="$1" payload="$2" output="$3"
[[ -x "$busybox" ]] || { echo "make-initramfs: no busybox at $busybox" >&2; exit 1; }
[[ -f "$payload/payload/run.sh" ]] || { echo "make-initramfs: $payload/payload/run.sh is missing" >&2; exit 1; }

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,run,etc,lib,usr/bin}
cp "$busybox" "$root/bin/busybox"
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/payload/bin:/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
echo "FLEETPMU-EMU: boot $(cut -d' ' -f1 /proc/uptime)"
cd /payload
sh /payload/run.sh
echo "FLEETPMU-EMU: run.sh exit $? at $(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
INIT
chmod +x "$root/init"
cp -a "$payload"/. "$root"/
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$output.tmp"
mv "$output.tmp" "$output"
