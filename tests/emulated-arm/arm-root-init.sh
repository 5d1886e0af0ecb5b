#!/bin/sh
# /init of the emulated ARM host's root (make-arm-root.sh puts it there): PID 1, no systemd.
# Mounts the pseudo file systems, names the host from /etc/hostname, loads virtio_net (a module
# in Debian's kernel), gives eth0 QEMU user networking's guest address 10.0.2.15/24, runs
# /etc/fleetpmu-emu/run.sh when a caller supplied one, and powers off. Console markers:
#   FLEETPMU-EMU: boot <uptime> | net <address> | no eth0 | run.sh exit <status> at <uptime>
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
echo "FLEETPMU-EMU: boot $(cut -d' ' -f1 /proc/uptime)"
[ -s /etc/hostname ] && cat /etc/hostname >/proc/sys/kernel/hostname
for module in $(cat /usr/lib/fleetpmu-emu/modules/load-order); do
  insmod "/usr/lib/fleetpmu-emu/modules/$module" || echo "FLEETPMU-EMU: insmod $module failed"
done
ip link set lo up
# QEMU user networking: the guest is 10.0.2.15; the forwards the caller set up live on 10.0.2.0/24.
if ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0; then
  echo "FLEETPMU-EMU: net $(ip -4 -o addr show dev eth0 | awk '{print $4}')"
else
  echo "FLEETPMU-EMU: no eth0"
fi
status=none
if [ -f /etc/fleetpmu-emu/run.sh ]; then
  sh /etc/fleetpmu-emu/run.sh
  status=$?
fi
echo "FLEETPMU-EMU: run.sh exit $status at $(cut -d' ' -f1 /proc/uptime)"
sync
echo 1 >/proc/sys/kernel/sysrq
echo o >/proc/sysrq-trigger
sleep 30
