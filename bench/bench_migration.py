#!/usr/bin/env python3
"""bench_migration: total time and downtime of a live migration, Apiary
against QEMU (-accel kvm), each between two processes of its own kind on
127.0.0.1, in the same run on the same /dev/kvm, with two guests: Linux
(128 and 256 MiB) and memload (64 and 256 MiB).

memload (guest/memload, an in-tree guest both VMMs boot through PVH)
fills a quarter of its RAM with a pattern it can check, counts seconds
("tick <n>") on its PIT and, when busy, rewrites that region at a fixed
rate (--memload-rate, default 64 MiB/s) paced by the PIT, so the two VMMs
face the same dirty rate (the Linux loop below does not: its rate depends
on the VMM). Each rewrite first compares the page with what was written
there before. Per case: the source prints "memload: ready" and two ticks
and answers a typed "check <token>" (the whole region read back) with ok;
busy, a second check 2 s later gives the rate it reached, printed. After
the migration the destination must answer a check with ok (a busy guest:
two checks 1.5 s apart, its position advanced), must count past the
source's last tick, and must not restart: no count below the one before
the source's check, no count going back, no second ready line. Cases memload-idle-64,
memload-busy-64, memload-idle-256, memload-busy-256.

The Linux guest is guest/linux (Debian's kernel as the bzImage, busybox
initramfs, "console=ttyS0 quiet"), 1 vCPU, in four cases: idle and busy,
with 128 and 256 MiB of RAM. Not 64 MiB, with either image of the kernel:
Debian's kernel alone takes 55 MiB (text, data, bss) and the bzImage asks
for 63.6 MiB to decompress into (its init_size), so with 64 MiB QEMU's
guest prints nothing at all; the ELF vmlinux inside it (the PVH image
bench_linux_boot also boots, guest/linux-vmlinux) is linked to load at
16 MiB and its last segment (init, bss, brk) ends at 74 MiB (0x4a00000).
With 64 MiB Apiary refuses it (image_too_large: "ELF segment [0x3079000,
+0x1987000) does not fit in guest RAM below 0x4000000"), and QEMU loads
what fits and starts it: under TCG the kernel warns in early_ioremap and
panics in find_cpio_data ("Attempted to kill the idle task"), and under
nested KVM in kvm-vm it froze the whole VM, twice (kvm-vm: vm_stalled).

Per case and VMM: the source boots to the line "apiary-linux: ready" on its
serial console and its shell answers; the destination is started and its
LISTEN socket on 127.0.0.1:PORT (a free port) looked for in /proc/net/tcp
(a connection to find out would be taken for the migration stream); the
migration is started and awaited; then the destination's guest must answer
on its console (a typed `echo alive-$((N+1))` must print alive-<N+1>; the
console's echo of the typed line cannot match) and both processes are
killed. One VMM after the other (QEMU first), never at the same time.

Busy: the guest's /tmp (tmpfs) gets a file of a quarter of its RAM (32 MiB
or 64 MiB) filled with non-zero bytes (`yes` lines of 500 '0's and a
newline: 501 bytes, so no two neighbouring 64 KiB blocks are alike), and a
loop in the background rotates it by one 64 KiB block per pass, in place
and without pause: `dd if=/tmp/dirty of=/tmp/dirty bs=64k skip=1
conv=notrunc` with the first block saved before and put last after, then
the pass number into /tmp/pass. Every pass rewrites every page of the file
with other bytes. Not zeros (`dd if=/dev/zero`): both VMMs may send a zero
page as a marker, which would make the busy guest cheap. The loop must be
seen to advance (/tmp/pass read twice) before the migration starts, and
again on the destination afterwards. The rate it dirtied memory at before
the migration is printed, not a figure: during the migration the one CPU
also runs both VMMs and the stream, and the VMM's dirty logging traps the
guest's first write to each page of a round, so the guest dirties less
then. In kvm-vm (2026-12-05) the same loop dirtied 60-124 MiB/s under QEMU
and 17-50 MiB/s under Apiary, with the vCPU thread about 95 % in guest mode
and about 850 exits/s under both, the same CPU flags, clock source and
mitigations in both guests and both VMMs' RAM in transparent huge pages;
why Apiary's guest gets less done is not known. So the busy cases are the
same loop, not the same dirty rate: QEMU's guest dirties 2-3x faster.

QEMU: source `qemu-system-x86_64 -accel kvm -cpu host -machine pc -smp 1
-m MiB -nodefaults -display none -serial stdio -kernel ... -initrd ...
-append ... -qmp unix:...`, destination the same plus `-incoming
tcp:127.0.0.1:PORT`. Over QMP: max-bandwidth 1 TiB/s (unthrottled; QEMU's
default is 128 MiB/s), downtime-limit 300 ms (QEMU's default, set
explicitly), no capabilities beyond the defaults (no auto-converge, xbzrle,
multifd, compression or return path; QEMU's zero-page detection is on),
`migrate uri=tcp:127.0.0.1:PORT`, `query-migrate` polled every 50 ms until
"completed"; the figures are its total-time and downtime (ms), both QEMU's
own, measured on the source (downtime: from stopping the guest to the end
of the migration there).

Apiary: destination `apiary run --incoming 127.0.0.1:PORT -q` (the whole
machine comes from the stream; stdout is the console, stdin is typed into
it); source `apiary run --kernel ... --initrd ... --cmdline ... --memory
MiB --vcpus 1 -q --migrate-to 127.0.0.1:PORT`, the migration started with
SIGUSR2. The source's stderr line
    apiary: migrated to ADDR: total <ms> ms, downtime <ms> ms, <n> rounds, <pages> pages, <MiB> MiB
(then exit status 13) gives the figures; "apiary: migration failed: <why>"
is a failure, printed with the end of both Apiary processes' console and
stderr. Apiary's total runs from connecting to the destination until it
reports that the guest runs, so unlike QEMU's it includes sending the
kernel and initrd (the destination keeps them for reboots: 12.6 MiB of the
"MiB" for Linux, 40 KiB for memload) and the destination building its machine (QEMU's destination
is built before the migration starts); its downtime runs from asking the
vCPUs to stop until the destination reports that the guest runs, so it
includes the destination's resume. "pages" counts every page sent, zero
pages of the later rounds included (16-byte records; the first round
skips never-touched and zero pages, as the destination's RAM starts zero).
A run ended by the round limit has " (did not converge: stopped after the
round limit)" after the MiB, printed as "did not converge".

Convergence, the same bound for both: pre-copy rounds until what is left
fits the 300 ms downtime target at the measured bandwidth, or at most 30
rounds, then stop-and-copy of whatever is left. That is Apiary's own policy.
QEMU has no round limit (a guest that dirties faster than the stream drains
never converges), so it gets the bound as its users force convergence:
once query-migrate's ram.dirty-sync-count exceeds 30, i.e. 30 rounds are
done (QEMU syncs the dirty bitmap once at the start, then at the end of
each round, the stop-and-copy's included: an idle guest ends at 3, one
pre-copy round), downtime-limit is raised to 2000 s (its maximum), and
QEMU stops the guest and copies the rest at its next check, within about a
round (seen: bound at 3, stop-and-copy at 5); its downtime figure includes
that stop-and-copy. Not
auto-converge (it throttles the guest, which Apiary does not) and not a
`stop` from outside (QEMU's downtime would then leave out the time stopped
before its own stop-and-copy). Printed per migration: QEMU's
dirty-sync-count or Apiary's rounds, whether the bound forced QEMU, pages
and MiB sent. A migration not completed within --deadline (default 300 s)
fails.

Prints one figure line per result (median of --runs, default 1: in
kvm-vm with two vCPUs one run of all eight cases, both VMMs, boots and
checks included, took 5 minutes), for CASE in
idle_128, busy_128, idle_256, busy_256, memload_idle_64, memload_busy_64,
memload_idle_256, memload_busy_256:
    figure: migration_CASE_total_ms_apiary <ms> ms
    figure: migration_CASE_total_ms_qemu <ms> ms
    figure: migration_CASE_downtime_ms_apiary <ms> ms
    figure: migration_CASE_downtime_ms_qemu <ms> ms
    figure: migration_CASE_total_ratio <apiary / qemu> x
    figure: migration_CASE_downtime_ratio <apiary / qemu> x
--only qemu|apiary measures one VMM (no ratios); --cases idle-128,busy-256
picks cases. A (case, VMM) with a failed run prints no figure.
Exit status 1 when a migration fails, a guest does not boot or is not
alive on the destination afterwards, or a deadline passes; the other
cases still run. Run it where /dev/kvm works (scripts/run-benchmarks.sh
uses kvm-vm).
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

APIARY = "@APIARY_BINARY@"
GUEST_DIR = "@APIARY_GUEST_DIR@"
MARKER = re.compile(rb"apiary-linux: ready")
CMDLINE = "console=ttyS0 quiet"
MEMLOAD_MARKER = re.compile(rb"memload: ready")
MEMLOAD_TICK = re.compile(rb"tick (\d+)\r?\n")
LINUX_CASES = ["idle-128", "busy-128", "idle-256", "busy-256"]
MEMLOAD_CASES = ["memload-idle-64", "memload-busy-64", "memload-idle-256", "memload-busy-256"]
CASES = LINUX_CASES + MEMLOAD_CASES
MEMLOAD_BUSY_MIB_PER_S = 64              # what the memload guest rewrites when busy
DOWNTIME_LIMIT_MS = 300                  # QEMU's default, and Apiary's target
MAX_ROUNDS = 30                          # Apiary's pre-copy bound; QEMU's forced the same way
FORCED_DOWNTIME_LIMIT_MS = 2000 * 1000   # QEMU's maximum downtime-limit (2000 s)
MAX_BANDWIDTH = 1 << 40                  # bytes/s: unthrottled
APIARY_MIGRATED_STATUS = 13
APIARY_MIGRATED = re.compile(
    rb"apiary: migrated to (\S+): total ([0-9.]+) ms, downtime ([0-9.]+) ms, (\d+) rounds?, (\d+) pages?, "
    rb"([0-9.]+) MiB( \(did not converge[^)\n]*\))?")
APIARY_FAILED = re.compile(rb"apiary: migration failed: ([^\n]*)")


class Failure(Exception):
    pass


class Case:
    """One case: which guest (linux or memload), idle or busy, MiB of RAM,
    and what each VMM boots for it."""

    def __init__(self, name, args):
        parts = name.split("-")
        self.name = name
        self.memload = parts[0] == "memload"
        if self.memload:
            parts = parts[1:]
        self.busy, self.mib = parts[0] == "busy", int(parts[1])
        if self.memload:
            self.kernel, self.initrd = os.path.join(GUEST_DIR, "memload.elf"), None
            self.cmdline = f"mib_per_s={args.memload_rate if self.busy else 0}"
        else:
            self.kernel = os.path.join(GUEST_DIR, "linux-vmlinuz")
            self.initrd = os.path.join(GUEST_DIR, "linux-initramfs.cpio")
            self.cmdline = CMDLINE

    def qemu_boot_args(self):
        return ["-kernel", self.kernel] + (["-initrd", self.initrd] if self.initrd else []) + ["-append", self.cmdline]

    def apiary_boot_args(self):
        return ["--kernel", self.kernel] + (["--initrd", self.initrd] if self.initrd else []) + \
            ["--cmdline", self.cmdline]


class Vmm:
    """A VMM process: stdin is typed into the guest's console, stdout (the
    console) and stderr are collected by a thread each, so neither pipe can
    fill up while the other is waited on."""

    def __init__(self, name, argv):
        self.name = name
        self.argv = argv
        self.out = bytearray()
        self.err = bytearray()
        self.cond = threading.Condition()
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.threads = [threading.Thread(target=self._pump, args=(self.p.stdout, self.out), daemon=True),
                        threading.Thread(target=self._pump, args=(self.p.stderr, self.err), daemon=True)]
        for t in self.threads:
            t.start()

    def _pump(self, stream, buf):
        fd = stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self.cond:
                if not chunk:
                    self.cond.notify_all()
                    return
                buf += chunk
                self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.out)

    def wait_for(self, pattern, deadline, what, since=0, stderr=False):
        """The first match of pattern in the console (or stderr) after
        offset since; Failure when the process ends or deadline passes."""
        end = time.monotonic() + deadline
        with self.cond:
            while True:
                buf = self.err if stderr else self.out
                m = pattern.search(bytes(buf[since:]))
                if m:
                    return m
                if self.p.poll() is not None and not any(t.is_alive() for t in self.threads):
                    raise Failure(f"{self.name}: exited with status {self.p.returncode} before {what}\n"
                                  f"{self.tail()}")
                left = end - time.monotonic()
                if left <= 0:
                    raise Failure(f"{self.name}: no {what} within {deadline:.0f} s\n{self.tail()}")
                self.cond.wait(min(left, 0.5))

    def type(self, line):
        try:
            self.p.stdin.write(line.encode() + b"\n")
            self.p.stdin.flush()
        except OSError as e:
            raise Failure(f"{self.name}: cannot type into the console: {e}")

    def tail(self):
        out = bytes(self.out[-1500:]).decode(errors="replace")
        err = bytes(self.err[-1500:]).decode(errors="replace")
        return f"  last console output:\n{out}\n  last stderr:\n{err}"

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # Seen under nested KVM emulated by TCG: a vCPU thread stuck
                # in KVM_RUN makes the VMM unkillable. Name it, do not hang.
                raise Failure(f"{self.name}: vmm_unkillable: pid {self.p.pid} did not die within 30 s of SIGKILL")
        for t in self.threads:
            t.join(timeout=5)


class Qmp:
    """A QMP client on a unix socket (one command at a time; events skipped)."""

    def __init__(self, path, vmm, deadline):
        end = time.monotonic() + deadline
        while True:
            if vmm.p.poll() is not None:
                raise Failure(f"{vmm.name}: exited with status {vmm.p.returncode} before its QMP socket\n"
                              f"{vmm.tail()}")
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > end:
                    raise Failure(f"{vmm.name}: no QMP socket within {deadline:.0f} s")
                time.sleep(0.1)
        self.name = vmm.name
        self.sock.settimeout(60)
        self.f = self.sock.makefile("rwb")
        self._read()  # the greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.f.readline()
        if not line:
            raise Failure(f"{self.name}: QMP connection closed")
        return json.loads(line)

    def cmd(self, name, **arguments):
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.f.write(json.dumps(msg).encode() + b"\n")
        self.f.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise Failure(f"{self.name}: QMP {name}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """Whether some socket listens on TCP port (from /proc/net/tcp{,6}:
    connecting to find out would be taken for the migration stream)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            pass
    return False


def wait_listening(vmm, port, deadline):
    end = time.monotonic() + deadline
    while not listening(port):
        if vmm.p.poll() is not None:
            raise Failure(f"{vmm.name}: exited with status {vmm.p.returncode} before listening on port {port}\n"
                          f"{vmm.tail()}")
        if time.monotonic() > end:
            raise Failure(f"{vmm.name}: not listening on 127.0.0.1:{port} within {deadline:.0f} s\n{vmm.tail()}")
        time.sleep(0.1)


def shell_value(vmm, expr, deadline, what):
    """Types `echo v-<n>-$(expr)-e` and returns what expr printed. The
    console echoes the typed line too; only the shell's answer has the
    expansion done, and the token n makes it this answer."""
    n = random.randrange(10 ** 6, 10 ** 7)
    since = vmm.mark()
    vmm.type(f"echo v-{n}-$({expr})-e")
    m = vmm.wait_for(re.compile(rb"v-%d-([^$\r\n]*)-e" % n), deadline, what, since)
    return m.group(1).decode(errors="replace")


def check_alive(vmm, deadline):
    n = random.randrange(10 ** 6, 10 ** 7)
    since = vmm.mark()
    vmm.type(f"echo alive-$(({n}+1))")
    vmm.wait_for(re.compile(rb"alive-%d\b" % (n + 1)), deadline, "answer on the destination's console", since)


def start_busy(vmm, mib, deadline):
    """Fills /tmp/dirty (a quarter of the RAM) with non-zero bytes, starts
    the loop that rotates it by one 64 KiB block per pass, and waits until
    the loop has been seen to advance; returns the MiB/s it dirtied."""
    blocks = mib * 16 // 4  # 64 KiB blocks: a quarter of the RAM
    # 501-byte lines: a block and its neighbour differ (65536 % 501 != 0).
    vmm.type(f"yes $(printf %0500d 0) | dd of=/tmp/dirty bs=64k count={blocks} iflag=fullblock 2>/dev/null; "
             "(i=0; while :; do i=$((i+1)); dd if=/tmp/dirty of=/tmp/b0 bs=64k count=1 2>/dev/null; "
             "dd if=/tmp/dirty of=/tmp/dirty bs=64k skip=1 conv=notrunc 2>/dev/null; "
             f"dd if=/tmp/b0 of=/tmp/dirty bs=64k seek={blocks - 1} conv=notrunc 2>/dev/null; "
             "echo $i >/tmp/pass; done) &")
    end = time.monotonic() + deadline
    first = None
    while time.monotonic() < end:
        v = shell_value(vmm, "cat /tmp/pass 2>/dev/null", deadline, "the busy loop's pass count")
        now = time.monotonic()
        passes = int(v) if v.isdigit() else 0  # empty: read between the loop's truncate and write
        if first is None and passes >= 1:
            first = (passes, now)
        elif first is not None and passes > first[0] and now - first[1] >= 2:
            return (passes - first[0]) * (mib / 4) / (now - first[1])
        time.sleep(0.5)
    raise Failure(f"{vmm.name}: the busy loop did not advance within {deadline:.0f} s\n{vmm.tail()}")


def check_busy_resumed(vmm, deadline):
    """The busy loop goes on on the destination: its pass count grows. A
    read can find /tmp/pass empty (the loop's `echo $i >/tmp/pass` truncates
    it before it writes); such a read is not a count and is skipped."""
    end = time.monotonic() + deadline
    first = None
    while time.monotonic() < end:
        v = shell_value(vmm, "cat /tmp/pass", deadline, "the busy loop's pass count")
        if v.isdigit():
            if first is None:
                first = int(v)
            elif int(v) > first:
                return
        time.sleep(0.5)
    raise Failure(f"{vmm.name}: the busy loop did not go on after the migration (first count read: {first})\n"
                  f"{vmm.tail()}")


def last_tick(vmm):
    ticks = MEMLOAD_TICK.findall(bytes(vmm.out))
    return int(ticks[-1]) if ticks else 0


def memload_check(vmm, deadline):
    """Types `check <token>`: the guest reads its whole region against what
    it wrote there and answers ok (with its pass and page) or FAILED.
    Returns (pass, page, pages in the region)."""
    n = random.randrange(10 ** 6, 10 ** 7)
    since = vmm.mark()
    vmm.type(f"check {n}")
    m = vmm.wait_for(re.compile(rb"memload: check %d (ok|FAILED)([^\r\n]*)\r?\n" % n), deadline,
                     "memload's answer to check", since)
    if m.group(1) != b"ok":
        raise Failure(f"{vmm.name}: memload found its memory changed: {m.group(0).decode(errors='replace')}\n"
                      f"{vmm.tail()}")
    pos = re.search(rb"(\d+) pages, pass (\d+), page (\d+)", m.group(2))
    return (int(pos.group(2)), int(pos.group(3)), int(pos.group(1))) if pos else (0, 0, 0)


def memload_alive(src, dst, replays_history, busy, deadline):
    """On the destination: the memory is intact, the count goes on from the
    source's without a restart, and a busy guest goes on rewriting.
    Apiary's destination prints the console history first: what follows
    the source's check line there is compared (QEMU's has no history)."""
    src_out = bytes(src.out)
    check_line = list(re.finditer(rb"memload: check \d+ ok[^\r\n]*\r?\n", src_out))[-1]
    check_tick = ([0] + [int(t) for t in MEMLOAD_TICK.findall(src_out[:check_line.start()])])[-1]
    source_tick = last_tick(src)
    since = 0
    if replays_history:
        since = dst.wait_for(re.compile(re.escape(check_line.group(0))), deadline,
                             "the source's console history").end()
    first = memload_check(dst, deadline)
    end = time.monotonic() + deadline
    while True:
        ticks = [int(t) for t in MEMLOAD_TICK.findall(bytes(dst.out[since:]))]
        if ticks and ticks[-1] > source_tick:
            break
        if time.monotonic() > end:
            raise Failure(f"{dst.name}: no count past the source's last ({source_tick}) within {deadline:.0f} s\n"
                          f"{dst.tail()}")
        time.sleep(0.2)
    # A restart shows as a count below the one before the source's check, a
    # count going back, or the ready line again.
    if ticks[0] < check_tick or any(b <= a for a, b in zip(ticks, ticks[1:])) or \
            MEMLOAD_MARKER.search(bytes(dst.out[since:])):
        raise Failure(f"{dst.name}: the count restarted or went back after the migration (counts {ticks}, "
                      f"the source's last {source_tick})\n{dst.tail()}")
    if busy:
        time.sleep(1.5)
        if memload_check(dst, deadline) == first:
            raise Failure(f"{dst.name}: memload stopped rewriting after the migration (at pass {first[0]}, "
                          f"page {first[1]})\n{dst.tail()}")


def boot_source(vmm, args, case):
    if case.memload:
        vmm.wait_for(MEMLOAD_MARKER, args.boot_deadline, "memload's ready line")
        vmm.wait_for(re.compile(rb"tick 2\r?\n"), 30, "memload's second tick")
        p0, t0 = memload_check(vmm, 30), time.monotonic()
        if case.busy:
            time.sleep(2)
            p1, t1 = memload_check(vmm, 30), time.monotonic()
            pages = (p1[0] - p0[0]) * p0[2] + p1[1] - p0[1]
            print(f"    memload: {pages * 4096 / 2**20 / (t1 - t0):.1f} MiB/s rewritten before the migration",
                  flush=True)
        return
    busy, mib = case.busy, case.mib
    vmm.wait_for(MARKER, args.boot_deadline, "ready marker")
    # The shell answers once it is up (its prompt follows the marker).
    shell_value(vmm, "echo up", 60, "shell")
    if busy:
        rate = start_busy(vmm, mib, 120)
        print(f"    busy loop: {rate:.1f} MiB/s dirtied before the migration", flush=True)


def check_destination(src, dst, case, replays_history):
    if case.memload:
        memload_alive(src, dst, replays_history, case.busy, 60)
        return
    check_alive(dst, 60)
    if case.busy:
        check_busy_resumed(dst, 60)


def migrate_qemu(qemu, case, args, tmp):
    port = free_port()
    common = [qemu, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-smp", "1", "-m", str(case.mib),
              "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"] + \
        case.qemu_boot_args()
    src_sock, dst_sock = os.path.join(tmp, "src.qmp"), os.path.join(tmp, "dst.qmp")
    for p in (src_sock, dst_sock):
        if os.path.exists(p):
            os.unlink(p)
    vmms = []
    qmps = []
    try:
        src = Vmm("qemu source", common + ["-qmp", f"unix:{src_sock},server=on,wait=off"])
        vmms.append(src)
        boot_source(src, args, case)
        dst = Vmm("qemu destination", common + ["-qmp", f"unix:{dst_sock},server=on,wait=off",
                                                "-incoming", f"tcp:127.0.0.1:{port}"])
        vmms.append(dst)
        qd = Qmp(dst_sock, dst, 60)
        qmps.append(qd)
        wait_listening(dst, port, 60)
        qs = Qmp(src_sock, src, 60)
        qmps.append(qs)
        qs.cmd("migrate-set-parameters", **{"max-bandwidth": MAX_BANDWIDTH, "downtime-limit": DOWNTIME_LIMIT_MS})
        qs.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        start = time.monotonic()
        forced = False
        while True:
            info = qs.cmd("query-migrate")
            status = info.get("status")
            syncs = info.get("ram", {}).get("dirty-sync-count", 0)
            if status == "completed":
                break
            if status in ("failed", "cancelled"):
                raise Failure(f"qemu: migration {status}: {info.get('error-desc', '')}")
            if not forced and syncs > MAX_ROUNDS:
                qs.cmd("migrate-set-parameters", **{"downtime-limit": FORCED_DOWNTIME_LIMIT_MS})
                forced = True
            if time.monotonic() - start > args.deadline:
                try:
                    qs.cmd("migrate_cancel")
                except Failure:
                    pass
                raise Failure(f"qemu: migration not completed within {args.deadline:.0f} s "
                              f"(dirty-sync-count {syncs}, status {status})")
            time.sleep(0.05)
        ram = info.get("ram", {})
        total, downtime = float(info["total-time"]), float(info["downtime"])
        print(f"    qemu: total {total:.0f} ms, downtime {downtime:.0f} ms, "
              f"dirty-sync-count {ram.get('dirty-sync-count')}{' (forced by the round bound)' if forced else ''}, "
              f"{ram.get('normal', 0)} pages, "
              f"{ram.get('duplicate', 0)} zero pages, {ram.get('transferred', 0) / 2**20:.1f} MiB sent, "
              f"{ram.get('mbps', 0):.0f} Mbit/s", flush=True)
        dst_status = qd.cmd("query-status")
        if dst_status.get("status") != "running":
            # -incoming without -S resumes on its own once the stream is in.
            end = time.monotonic() + 60
            while dst_status.get("status") != "running" and time.monotonic() < end:
                time.sleep(0.2)
                dst_status = qd.cmd("query-status")
            if dst_status.get("status") != "running":
                raise Failure(f"qemu destination: status {dst_status.get('status')} after the migration")
        check_destination(src, dst, case, False)
        return total, downtime
    finally:
        for q in qmps:
            q.close()
        for v in vmms:
            v.kill()


def migrate_apiary(case, args):
    port = free_port()
    addr = f"127.0.0.1:{port}"
    vmms = []
    try:
        src = Vmm("apiary source", [APIARY, "run"] + case.apiary_boot_args() +
                  ["--memory", str(case.mib), "--vcpus", "1", "-q", "--migrate-to", addr])
        vmms.append(src)
        boot_source(src, args, case)
        dst = Vmm("apiary destination", [APIARY, "run", "--incoming", addr, "-q"])
        vmms.append(dst)
        wait_listening(dst, port, 60)
        src.p.send_signal(signal.SIGUSR2)
        end = time.monotonic() + args.deadline
        pattern = re.compile(APIARY_MIGRATED.pattern + b"|" + APIARY_FAILED.pattern)
        m = src.wait_for(pattern, args.deadline, "migration report on stderr", stderr=True)
        failed = APIARY_FAILED.match(m.group(0))
        if failed:
            raise Failure(f"apiary: migration failed: {failed.group(1).decode(errors='replace')}")
        _, total, downtime, rounds, pages, sent, unconverged = m.groups()[:7]
        print(f"    apiary: total {float(total):.0f} ms, downtime {float(downtime):.0f} ms, {rounds.decode()} rounds"
              f"{' (did not converge)' if unconverged else ''}, {pages.decode()} pages, {sent.decode()} MiB sent",
              flush=True)
        try:
            status = src.p.wait(timeout=max(end - time.monotonic(), 30))
        except subprocess.TimeoutExpired:
            raise Failure("apiary source: still running after its migration report")
        if status != APIARY_MIGRATED_STATUS:
            raise Failure(f"apiary source: exit status {status} after the migration, not {APIARY_MIGRATED_STATUS}")
        check_destination(src, dst, case, True)
        return float(total), float(downtime)
    except Failure as e:
        # Both processes' own words: the source's report names the step, the
        # destination's stderr often the reason.
        time.sleep(0.5)
        raise Failure(str(e) + "".join(f"\n  --- {v.name} (argv {' '.join(v.argv)}):\n{v.tail()}" for v in vmms))
    finally:
        for v in vmms:
            v.kill()


def main():
    ap = argparse.ArgumentParser(description="Live migration of the Linux guest, Apiary vs QEMU")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--only", choices=["qemu", "apiary"])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated, of " + ",".join(CASES))
    ap.add_argument("--deadline", type=float, default=300, help="seconds for one migration")
    ap.add_argument("--boot-deadline", type=float, default=180, help="seconds for the source to boot")
    ap.add_argument("--memload-rate", type=int, default=MEMLOAD_BUSY_MIB_PER_S,
                    help="MiB/s the busy memload guest rewrites")
    args, _ = ap.parse_known_args()  # run-benchmarks passes Google Benchmark flags to everyone
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        print(f"bench_migration: unknown case {', '.join(unknown) or '(none)'}; cases: {','.join(CASES)}",
              file=sys.stderr)
        return 2
    vmms = [args.only] if args.only else ["qemu", "apiary"]
    case_of = {c: Case(c, args) for c in cases}
    qemu = shutil.which("qemu-system-x86_64")
    missing = sorted({f for c in case_of.values() for f in (c.kernel, c.initrd) if f and not os.path.exists(f)})
    if missing or ("qemu" in vmms and qemu is None):
        print(f"bench_migration: needs the built guests ({', '.join(missing) or 'present'}) and "
              "qemu-system-x86_64", file=sys.stderr)
        return 1

    results = {(c, v): [] for c in cases for v in vmms}
    failed = set()
    with tempfile.TemporaryDirectory(prefix="bench_migration.") as tmp:
        for i in range(args.runs):
            for case in cases:
                for vmm in vmms:
                    print(f"run {i + 1}: {case} {vmm}", flush=True)
                    t0 = time.monotonic()
                    try:
                        if vmm == "qemu":
                            r = migrate_qemu(qemu, case_of[case], args, tmp)
                        else:
                            r = migrate_apiary(case_of[case], args)
                        results[(case, vmm)].append(r)
                        print(f"    ({time.monotonic() - t0:.0f} s with boot and checks)", flush=True)
                    except (Failure, OSError, ValueError) as e:  # OSError, ValueError: QMP
                        print(f"bench_migration: {case} {vmm}: {e}", file=sys.stderr, flush=True)
                        failed.add((case, vmm))

    for case in cases:
        name = "migration_" + case.replace("-", "_")
        med = {}
        for vmm in vmms:
            if (case, vmm) in failed or not results[(case, vmm)]:
                continue
            med[vmm] = (statistics.median(r[0] for r in results[(case, vmm)]),
                        statistics.median(r[1] for r in results[(case, vmm)]))
        for kind, k in (("total", 0), ("downtime", 1)):
            for vmm in vmms:
                if vmm in med:
                    print(f"figure: {name}_{kind}_ms_{vmm} {med[vmm][k]:.0f} ms")
        if "qemu" in med and "apiary" in med:
            for kind, k in (("total", 0), ("downtime", 1)):
                if med["qemu"][k] > 0:
                    print(f"figure: {name}_{kind}_ratio {med['apiary'][k] / med['qemu'][k]:.2f} x")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
