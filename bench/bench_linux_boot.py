#!/usr/bin/env python3
"""bench_linux_boot: time from start to the Linux guest's ready marker,
Apiary against QEMU (-accel kvm) booting the same kernel and initramfs with
the same command line on the same /dev/kvm, in the same run.

Both get 1 vCPU and 256 MiB; the guest is guest/linux (Debian's kernel,
busybox initramfs); the clock runs from spawning the VMM to the line
"apiary-linux: ready" on its serial console, then the guest is powered off
from its shell and the VMM's exit awaited. QEMU boots through its firmware
(SeaBIOS, then its linuxboot option ROM); Apiary has none.

Memory overhead: 3 s after the marker, while the guest idles at its shell,
the VMM process's RSS minus the RSS of its guest RAM mapping (the largest
anonymous mapping of at least the guest's size, from /proc/PID/smaps), i.e.
what the VMM costs beyond the memory the guest touched.

The same kernel is booted two ways by both VMMs: the bzImage (which
decompresses itself) and the ELF vmlinux inside it (guest/linux-vmlinux,
entered through its PVH note; QEMU boots it through SeaBIOS and its PVH
option ROM).

Prints one figure line per result (median of --runs, default 3):
    figure: linux_boot_apiary_s <s> s          (bzImage)
    figure: linux_boot_qemu_s <s> s
    figure: linux_boot_apiary_pvh_s <s> s      (vmlinux)
    figure: linux_boot_qemu_pvh_s <s> s
    figure: linux_boot_ratio <apiary / qemu> x (bzImage)
    figure: linux_boot_pvh_ratio <apiary / qemu> x
    figure: linux_boot_best_ratio <x>          (each VMM's faster way)
    figure: linux_idle_overhead_apiary_mib <MiB> MiB
    figure: linux_idle_overhead_qemu_mib <MiB> MiB
    figure: linux_idle_overhead_ratio <apiary / qemu> x
Exit status 1 when a VMM does not reach the marker within --deadline.
Run it where /dev/kvm works (scripts/run-benchmarks.sh uses kvm-vm).
"""

import argparse
import os
import select
import shutil
import statistics
import subprocess
import sys
import time

APIARY = "@APIARY_BINARY@"
GUEST_DIR = "@APIARY_GUEST_DIR@"
MARKER = b"apiary-linux: ready"
CMDLINE = "console=ttyS0 quiet"
GUEST_MIB = 256


def memory_kib(pid, guest_mib):
    """(RSS of the whole process, RSS of its guest RAM mapping) in KiB.

    The guest RAM is the largest anonymous mapping of at least guest_mib."""
    total = 0
    guest = 0
    size = rss = 0
    anonymous = False

    def close_mapping():
        nonlocal guest
        if anonymous and size >= guest_mib * 1024 and rss > guest:
            guest = rss

    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if not fields:
                continue
            if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
                close_mapping()
                anonymous = len(fields) < 6
                size = rss = 0
            elif fields[0] == "Size:":
                size = int(fields[1])
            elif fields[0] == "Rss:":
                rss = int(fields[1])
                total += rss
    close_mapping()
    return total, guest


def boot_once(argv, deadline, guest_mib, memory):
    """Seconds from spawn to MARKER; the guest is then powered off. When the
    guest idles at its shell, memory gets (process RSS, guest RAM RSS) KiB."""
    start = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b""
    took = None
    try:
        while time.monotonic() - start < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if not r:
                if p.poll() is not None:
                    break
                continue
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
            if took is None and MARKER in seen:
                took = time.monotonic() - start
                # The shell comes up right after the marker; give it its
                # prompt, and let the guest idle before the RSS is read.
                time.sleep(3.0)
                memory.append(memory_kib(p.pid, guest_mib))
                p.stdin.write(b"poweroff\n")
                p.stdin.flush()
                break
        if took is not None:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # Seen under nested KVM emulated by TCG: a vCPU thread stuck
                # in KVM_RUN makes the VMM unkillable. Name it, do not hang.
                raise RuntimeError(f"{argv[0]}: vmm_unkillable: pid {p.pid} did not die within 30 s of SIGKILL")
    if took is None:
        tail = seen.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{argv[0]}: no ready marker within {deadline} s; last output:\n{tail}")
    return took


def main():
    ap = argparse.ArgumentParser(description="Linux boot time, Apiary vs QEMU")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--deadline", type=float, default=180)
    args, _ = ap.parse_known_args()  # run-benchmarks passes Google Benchmark flags to everyone
    kernel = os.path.join(GUEST_DIR, "linux-vmlinuz")
    initrd = os.path.join(GUEST_DIR, "linux-initramfs.cpio")
    qemu = shutil.which("qemu-system-x86_64")
    if not os.path.exists(initrd) or not os.path.exists(os.path.join(GUEST_DIR, "linux-vmlinux")) or qemu is None:
        print("bench_linux_boot: needs the built Linux guest and qemu-system-x86_64", file=sys.stderr)
        return 1
    vmlinux = os.path.join(GUEST_DIR, "linux-vmlinux")

    def apiary(image):
        return [APIARY, "run", "--quiet", "--kernel", image, "--initrd", initrd, "--cmdline", CMDLINE,
                "--vcpus", "1", "--memory", str(GUEST_MIB), "--timeout", str(int(args.deadline) + 60)]

    def qemu_argv(image):
        return [qemu, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-smp", "1", "-m", str(GUEST_MIB),
                "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
                "-kernel", image, "-initrd", initrd, "-append", CMDLINE]

    # The same kernel two ways: the bzImage (it decompresses itself) and the
    # ELF vmlinux inside it (PVH entry, nothing to decompress), each VMM both.
    variants = [("apiary", apiary(kernel)), ("qemu", qemu_argv(kernel)),
                ("apiary_pvh", apiary(vmlinux)), ("qemu_pvh", qemu_argv(vmlinux))]
    results = {name: [] for name, _ in variants}
    overhead = {name: [] for name, _ in variants}
    try:
        for i in range(args.runs):
            for name, argv in variants:
                memory = []
                t = boot_once(argv, args.deadline, GUEST_MIB, memory)
                results[name].append(t)
                total, guest = memory[0]
                overhead[name].append((total - guest) / 1024)
                print(f"run {i + 1}: {name} {t:.2f} s; idle RSS {total / 1024:.1f} MiB, of it guest RAM "
                      f"{guest / 1024:.1f} MiB", flush=True)
    except RuntimeError as e:
        print(f"bench_linux_boot: {e}", file=sys.stderr)
        return 1
    med = {name: statistics.median(v) for name, v in results.items()}
    for name in ("apiary", "qemu", "apiary_pvh", "qemu_pvh"):
        print(f"figure: linux_boot_{name}_s {med[name]:.2f} s")
    print(f"figure: linux_boot_ratio {med['apiary'] / med['qemu']:.2f} x")
    print(f"figure: linux_boot_pvh_ratio {med['apiary_pvh'] / med['qemu_pvh']:.2f} x")
    # Each VMM at its fastest way to boot this kernel.
    best_a = min(med["apiary"], med["apiary_pvh"])
    best_q = min(med["qemu"], med["qemu_pvh"])
    print(f"figure: linux_boot_best_ratio {best_a / best_q:.2f} x")
    oa = statistics.median(overhead["apiary"] + overhead["apiary_pvh"])
    oq = statistics.median(overhead["qemu"] + overhead["qemu_pvh"])
    print(f"figure: linux_idle_overhead_apiary_mib {oa:.1f} MiB")
    print(f"figure: linux_idle_overhead_qemu_mib {oq:.1f} MiB")
    print(f"figure: linux_idle_overhead_ratio {oa / oq:.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
