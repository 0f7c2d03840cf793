#!/bin/busybox sh
# PID 1 of the bpfman test VM (runs from the initramfs that scripts/vm/vm.py builds).
#
# It mounts the host's root file system (9p, read-only) under a tmpfs overlay so that the guest can
# write anywhere without touching the host, mounts the kernel file systems the tests need, runs
# /run/bpfman-vm/run.sh (written by the host into the writable "results" share) chrooted in that
# overlay, writes its exit status to the results share and powers off. Every failure before the
# command runs prints one "bpfman-vm:" line on the console and powers off without a status file,
# which the host reports as a boot failure with the console's tail.
/bin/busybox mkdir -p /bin /proc /sys /dev
/bin/busybox --install -s /bin
export PATH=/bin

poweroff_now() {
    sync
    # With qemu's -no-reboot a reboot ends qemu at once (poweroff would need ACPI).
    reboot -f
    sleep 5
}
fail() {
    echo "bpfman-vm: $*"
    poweroff_now
}
# Value of NAME=VALUE on the kernel command line.
arg() {
    for w in $(cat /proc/cmdline); do
        case "$w" in "$1="*) echo "${w#*=}" ;; esac
    done
}

mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"

# Modules for virtio-pci, 9p and overlayfs, in dependency order (empty when they are built in).
for m in $(cat /modules.list); do
    insmod "/modules/$m" || fail "insmod $m failed"
done

R=/newroot
mkdir -p /host /rw $R
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /host \
    || fail "cannot mount the host root (9p tag hostroot)"
mount -t tmpfs -o mode=0755 rw /rw || fail "cannot mount the overlay's tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay $R \
    || fail "cannot mount the overlay over the host root"

mount -t proc proc $R/proc || fail "cannot mount proc in the new root"
mount -t sysfs sysfs $R/sys || fail "cannot mount sysfs in the new root"
mount -t devtmpfs devtmpfs $R/dev || fail "cannot mount devtmpfs in the new root"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
# A fresh /run: the host's locks, netns files and bpfman state must not leak into the guest.
mount -t tmpfs -o mode=0755 run $R/run || fail "cannot mount /run"
mkdir -p $R/run/bpfman-vm
mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=512000 results $R/run/bpfman-vm \
    || fail "cannot mount the results share (9p tag results)"
mount -t bpf bpf $R/sys/fs/bpf || fail "cannot mount bpffs"
mount -t debugfs debugfs $R/sys/kernel/debug || fail "cannot mount debugfs"
mount -t tracefs tracefs $R/sys/kernel/tracing || fail "cannot mount tracefs"

release=$(uname -r)
echo "$release" >$R/run/bpfman-vm/release
# The depmod'ed module tree lives in the host's cache (seen through 9p): bind it where kmod looks.
# Done inside the chroot because /lib is a symlink that must resolve in the new root.
moddir=$(arg bpfman.moddir)
if [ -n "$moddir" ]; then
    chroot $R /bin/sh -c "mkdir -p /lib/modules/$release && mount --bind $moddir /lib/modules/$release" \
        || fail "cannot bind the module tree $moddir"
fi
hostname bpfman-vm

read -r up _ </proc/uptime
echo "$up" >$R/run/bpfman-vm/boot-seconds
chroot $R /bin/sh /run/bpfman-vm/run.sh </dev/console >/dev/console 2>&1
status=$?
echo "$status" >$R/run/bpfman-vm/status
sync
umount $R/run/bpfman-vm
poweroff_now
