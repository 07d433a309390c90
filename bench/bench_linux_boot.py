#!/usr/bin/env python3
"""bench_linux_boot: time from start to the Linux guest's ready marker,
Apiary against QEMU (-accel kvm) booting the same kernel and initramfs with
the same command line on the same /dev/kvm, in the same run.

Both get 1 vCPU and 256 MiB; the guest is guest/linux (Debian's kernel,
busybox initramfs); the clock runs from spawning the VMM to the line
"apiary-linux: ready" on its serial console, then the guest is powered off
from its shell and the VMM's exit awaited. QEMU boots through its firmware
(SeaBIOS, then its linuxboot option ROM); Apiary has none.

Prints one figure line per result (median of --runs, default 3):
    figure: linux_boot_apiary_s <s> s
    figure: linux_boot_qemu_s <s> s
    figure: linux_boot_ratio <apiary / qemu> x
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


def boot_once(argv, deadline):
    """Seconds from spawn to MARKER; the guest is then powered off."""
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
                # The shell comes up right after the marker; give it its prompt.
                time.sleep(1.0)
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
            p.wait()
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
    if not os.path.exists(initrd) or qemu is None:
        print("bench_linux_boot: needs the built Linux guest and qemu-system-x86_64", file=sys.stderr)
        return 1
    apiary = [APIARY, "run", "--quiet", "--kernel", kernel, "--initrd", initrd, "--cmdline", CMDLINE,
              "--vcpus", "1", "--memory", "256", "--timeout", str(int(args.deadline) + 60)]
    qemu_argv = [qemu, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-smp", "1", "-m", "256",
                 "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
                 "-kernel", kernel, "-initrd", initrd, "-append", CMDLINE]
    results = {"apiary": [], "qemu": []}
    try:
        for i in range(args.runs):
            for name, argv in (("apiary", apiary), ("qemu", qemu_argv)):
                t = boot_once(argv, args.deadline)
                results[name].append(t)
                print(f"run {i + 1}: {name} {t:.2f} s", flush=True)
    except RuntimeError as e:
        print(f"bench_linux_boot: {e}", file=sys.stderr)
        return 1
    a = statistics.median(results["apiary"])
    q = statistics.median(results["qemu"])
    print(f"figure: linux_boot_apiary_s {a:.2f} s")
    print(f"figure: linux_boot_qemu_s {q:.2f} s")
    print(f"figure: linux_boot_ratio {a / q:.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
