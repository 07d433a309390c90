#!/usr/bin/env python3
"""bench_network: guest-to-guest round-trip latency and TCP throughput on an
Apiary network, on one node and across two nodes (the VXLAN overlay),
against the kernel's own data path in the same run.

Why: issue 13 asks what Apiary's data plane (virtio-net -> the node's switch
-> the node's user-space VXLAN tunnel) costs compared with what Linux does
for the same traffic. Why Python: the deployment is processes and network
namespaces (as tests/net/test_overlay.cpp builds them), the guests are
driven through `apiary ctl instance console ID --follow` (the product's own
console client: stdin to the guest, the console to stdout), and the baseline
is `ip netns exec`; no test framework is linked into a benchmark.

The deployment: a bridge and one network namespace per process (`apiary
controller` in "ctl", `apiary node --vtep <its address>` in "n1" and "n2"),
one network made through the API (POST /v1/networks) and three Linux guests
on it (guest/linux: Debian's kernel, busybox initramfs; 1 vCPU, 128 MiB
each; POST /v1/instances with devices.nics:[{network}]). The controller gives
the NICs their addresses and the guests configure them from the command line.
The scheduler spreads by load (ties by node name), so "a" lands on n1, "b"
on n2 and "c" on n1 again; the placement is checked, not assumed:
    one node:  c -> a, both on n1 (virtio-net -> switch -> virtio-net)
    two nodes: b -> a, n2 to n1 (virtio-net -> switch -> tunnel, UDP over the
               namespaces' veths and bridge -> tunnel -> switch -> virtio-net)
The baseline, in the same VM and run: two network namespaces joined by one
veth pair, (veth) directly over it (MTU 1500) and (vxlan) over a kernel VXLAN
device on top of it (VNI 42, dstport 4789, MTU 1450, the guests' MTU).

The same traffic with the same tools everywhere (busybox-static is both the
guests' userland and the baseline's, run through `ip netns exec`):
  - latency: `ping -c PING_COUNT -i PING_INTERVAL_S` after two warm-up pings
    (ARP); the figure is the median of the per-packet times;
  - throughput: the client fetches a FILE_MIB MiB file of zeros that busybox
    httpd serves from RAM (guest: its initramfs root; baseline: /dev/shm),
    `wget -O /dev/null` in a loop timed with /proc/uptime (10 ms ticks). One
    calibration pass picks the loop count per case so a measurement lasts at
    least MIN_TRANSFER_S; the figure is the median over ROUNDS.
The cases are measured in interleaved rounds (veth, vxlan, one node, two
nodes, then again) so drift of the machine lands on all of them.

Prints `figure: <name> <value> <unit>` lines:
    net_rtt_{veth,vxlan,one_node,two_nodes}_us            median RTT
    net_rtt_min_{veth,vxlan,one_node,two_nodes}_us        fastest RTT
    net_throughput_{veth,vxlan,one_node,two_nodes}_mbit_s median
    net_rtt_one_node_ratio        one node / veth       (both are one hop)
    net_rtt_two_nodes_ratio       two nodes / kernel vxlan
    net_throughput_one_node_ratio, net_throughput_two_nodes_ratio (likewise)
    net_rtt_min_one_node_ratio, net_rtt_min_two_nodes_ratio (likewise)
    net_kvm_exits_per_rtt_{one_node,two_nodes}   KVM exits per guest round trip
    net_kvm_exits_per_mib_{one_node,two_nodes}   KVM exits per MiB transferred
The fastest RTT is printed beside the median because the machine's other
load (the outer VM is a TCG-emulated guest of a 2-core host) shows as
multi-millisecond outliers that the median does not fully hide.
Exit status 1 when anything fails or a deadline passes (every wait has one;
the whole run has RUN_DEADLINE_S). Needs root, /dev/kvm, the veth, bridge and
vxlan modules: scripts/run-benchmarks.sh runs it in scripts/kvm-vm.
"""

import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

APIARY = "@APIARY_BINARY@"
GUEST_DIR = "@APIARY_GUEST_DIR@"

# Deployment: names and addresses (own prefix: nothing else here uses "apnb").
PREFIX = "apnb"
BRIDGE = PREFIX + "-br"
UNDERLAY = "10.78.0."                       # the processes' bridge, /24
BRIDGE_HOST = 254                           # the bridge's own address (ctl reaches the API through it)
MEMBERS = {"ctl": 1, "n1": 11, "n2": 12}    # namespace -> host part
API_PORT = 8080
NODE_PORT = 4242
NODE_VCPUS = 8
NODE_MEMORY_MIB = 2048
CHECKIN_MS = 1000
GUEST_NETWORK_CIDR = "10.20.0.0/24"
GUEST_MIB = 128
GUEST_CMDLINE = "console=ttyS0 quiet"
READY = "apiary-linux: ready kernel="
NET_LINE = re.compile(r"apiary-linux: net (\S+) (\S+) ([0-9.]+)/\d+ mtu (\d+)")
PROMPT = "# "

# Baseline: two namespaces, one veth pair, a kernel VXLAN device over it.
BASE_A, BASE_B = PREFIX + "-a", PREFIX + "-b"
VETH_NET = "10.79.0."
VXLAN_NET = "10.80.0."
VXLAN_VNI = 42
VXLAN_PORT = 4789
VXLAN_MTU = 1450

# Traffic.
PING_WARMUP = 2
PING_COUNT = 20
PING_INTERVAL_S = 0.2
PING_WAIT_S = 3
HTTP_PORT = 8000
FILE_MIB = 2
MIN_TRANSFER_S = 2.0
MAX_LOOPS = 64
ROUNDS = 3
CASES = ["veth", "vxlan", "one_node", "two_nodes"]
GUEST_CASES = ["one_node", "two_nodes"]

# What the guests' traffic costs in KVM exits (all VMs of the machine, from
# KVM's debugfs counters): a ping series with no output, less an idle window
# of the same length (timer ticks, the typed command's echo).
KVM_STATS_DIR = "/sys/kernel/debug/kvm"
KVM_STATS = ["exits", "io_exits", "mmio_exits", "halt_exits", "irq_injections", "halt_wakeup",
             "halt_poll_success_ns", "halt_poll_fail_ns"]   # the last two: time halted vCPUs spent polling
EXIT_PINGS = 50
EXIT_PING_INTERVAL_S = 0.1

# Deadlines (seconds). Under nested KVM in a TCG-emulated VM a Linux guest
# reaches its ready marker in tens of seconds, and three boot at once.
RUN_DEADLINE_S = 750          # with the VM's boot and the cleanup, below kvm-vm --timeout 900
SHELL_DEADLINE_S = 60         # one host command (ip, modprobe)
NODES_UP_S = 90
ACTIVE_S = 180
READY_S = 300
PROMPT_S = 60
COMMAND_S = 120               # one guest command without traffic
TRANSFER_S = 300              # one timed transfer loop
HTTP_S = 20                   # one API request
STOP_GRACE_S = 10


class BenchError(Exception):
    pass


STARTED = time.monotonic()


def log(msg):
    print(f"bench_network: [{time.monotonic() - STARTED:5.0f} s] {msg}", file=sys.stderr, flush=True)


def sh(cmd, timeout=SHELL_DEADLINE_S, check=True):
    """A host shell command with a deadline; its stdout."""
    try:
        r = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{cmd}` timed out after {timeout} s")
    if check and r.returncode != 0:
        raise BenchError(f"`{cmd}` failed (exit {r.returncode}): {r.stderr.strip()} {r.stdout.strip()}")
    return r.stdout


def in_netns(ns, script):
    """A busybox shell command line run inside namespace ns."""
    return f"ip netns exec {ns} busybox sh -c '{script}'"


# --- the traffic, as shell text: the same lines run in guests and namespaces

def ping_script(addr):
    return (f"ping -c {PING_WARMUP} -W {PING_WAIT_S} {addr} >/dev/null; "
            f"ping -c {PING_COUNT} -i {PING_INTERVAL_S} -W {PING_WAIT_S} {addr} | grep -o \"time=[0-9.]*\"")


def serve_script(root):
    return (f"mkdir -p {root} && dd if=/dev/zero of={root}/blob bs=1048576 count={FILE_MIB} 2>/dev/null && "
            f"httpd -p {HTTP_PORT} -h {root}")


def fetch_script(addr, loops):
    # The result line's text is split ("X""FER") so the echoed command
    # line cannot match it.
    return (f"i=0; r=0; read a x </proc/uptime; while [ $i -lt {loops} ]; do "
            f"wget -q -O /dev/null http://{addr}:{HTTP_PORT}/blob || r=1; i=$((i+1)); done; "
            f"read b x </proc/uptime; echo X\"\"FER=$r,$a,$b")


RTT_LINE = re.compile(r"time=([0-9.]+)")
XFER_LINE = re.compile(r"XFER=(\d+),([0-9.]+),([0-9.]+)")


def parse_rtts_us(out, what):
    rtts = [float(x) * 1000 for x in RTT_LINE.findall(out)]
    if len(rtts) < PING_COUNT // 2:
        raise BenchError(f"{what}: {len(rtts)} of {PING_COUNT} pings answered:\n{out[-1500:]}")
    return rtts


def parse_transfer_s(out, what):
    m = XFER_LINE.search(out)
    if not m or m.group(1) != "0":
        raise BenchError(f"{what}: the transfer failed:\n{out[-1500:]}")
    return float(m.group(3)) - float(m.group(2))


def kvm_counters():
    """KVM's counters summed over every VM on this machine; {} if unreadable."""
    if not os.path.isdir(KVM_STATS_DIR):
        sh("mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null", check=False)
    out = {}
    for name in KVM_STATS:
        try:
            with open(os.path.join(KVM_STATS_DIR, name)) as f:
                out[name] = int(f.read())
        except (OSError, ValueError):
            pass
    return out if "exits" in out else {}


# /proc/stat's first line: where this machine's CPU time went.
CPU_FIELDS = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice"]


def cpu_times():
    with open("/proc/stat") as f:
        return dict(zip(CPU_FIELDS, map(int, f.readline().split()[1:])))


def cpu_shares(before, after):
    """Shares of the machine's CPU time between two cpu_times(): guest (the
    nested guests' own code), vmm user (user-space work minus guest time:
    Apiary, busybox), kernel (system, irq, softirq: KVM's exit handling, the
    network stack), idle."""
    d = {k: after[k] - before[k] for k in CPU_FIELDS}
    guest = d["guest"] + d["guest_nice"]
    # The kernel counts guest time in user (and nice) as well: not twice.
    total = (sum(d.values()) - guest) or 1
    return {"guest": guest / total, "user": (d["user"] + d["nice"] - guest) / total,
            "kernel": (d["system"] + d["irq"] + d["softirq"]) / total,
            "idle": (d["idle"] + d["iowait"]) / total, "steal": d["steal"] / total}


def counted(fn):
    """(fn's result, seconds, KVM counter deltas, CPU shares) for one call of fn."""
    before, cpu0, t0 = kvm_counters(), cpu_times(), time.monotonic()
    result = fn()
    after, cpu1, t1 = kvm_counters(), cpu_times(), time.monotonic()
    delta = {k: after[k] - before[k] for k in before if k in after}
    return result, t1 - t0, delta, cpu_shares(cpu0, cpu1)


def shares_text(shares):
    return " ".join(f"{k} {v * 100:.0f}%" for k, v in shares.items())


# --- the deployment ---------------------------------------------------------

def address(member):
    return UNDERLAY + str(MEMBERS[member])


def netns(member):
    return f"{PREFIX}-{member}"


def cleanup_network():
    for m in MEMBERS:
        sh(f"ip netns del {netns(m)} 2>/dev/null", check=False)
    for ns in (BASE_A, BASE_B):
        sh(f"ip netns del {ns} 2>/dev/null", check=False)
    sh(f"ip link del {BRIDGE} 2>/dev/null", check=False)


def make_topology():
    sh("modprobe -a veth bridge vxlan 2>/dev/null", check=False)
    cleanup_network()
    sh(f"ip link add {BRIDGE} type bridge && ip link set {BRIDGE} up && "
       f"ip addr add {UNDERLAY}{BRIDGE_HOST}/24 dev {BRIDGE}")
    for m in MEMBERS:
        ns, link = netns(m), f"{PREFIX}-{m}"
        sh(f"ip netns add {ns} && ip link add {link} type veth peer name eth0 netns {ns} && "
           f"ip link set {link} master {BRIDGE} up && ip -n {ns} addr add {address(m)}/24 dev eth0 && "
           f"ip -n {ns} link set eth0 up && ip -n {ns} link set lo up")
    # The baseline: a <-veth-> b, and vx0 (VXLAN) over that veth.
    sh(f"ip netns add {BASE_A} && ip netns add {BASE_B} && "
       f"ip link add {PREFIX}-va netns {BASE_A} type veth peer name {PREFIX}-vb netns {BASE_B}")
    for ns, dev, me, peer in ((BASE_A, f"{PREFIX}-va", 1, 2), (BASE_B, f"{PREFIX}-vb", 2, 1)):
        sh(f"ip -n {ns} link set lo up && ip -n {ns} addr add {VETH_NET}{me}/24 dev {dev} && "
           f"ip -n {ns} link set {dev} up && "
           f"ip -n {ns} link add vx0 type vxlan id {VXLAN_VNI} local {VETH_NET}{me} remote {VETH_NET}{peer} "
           f"dstport {VXLAN_PORT} dev {dev} && ip -n {ns} link set vx0 mtu {VXLAN_MTU} up && "
           f"ip -n {ns} addr add {VXLAN_NET}{me}/24 dev vx0")


class Service:
    """An `apiary` process in a namespace, output to a log file."""

    def __init__(self, member, args, logfile):
        self.logfile = logfile
        with open(logfile, "ab") as out:
            self.p = subprocess.Popen(["ip", "netns", "exec", netns(member), APIARY] + args,
                                      stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def stop(self):
        stop_process(self.p)

    def tail(self, lines=30):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


def stop_process(p):
    if p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        p.kill()
        try:
            p.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log(f"pid {p.pid} did not die within {STOP_GRACE_S} s of SIGKILL")


class Api:
    def __init__(self, token):
        self.base = f"http://{address('ctl')}:{API_PORT}"
        self.token = token

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=HTTP_S) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, {"error": e.read().decode(errors="replace")}
        except (urllib.error.URLError, OSError, ValueError) as e:
            return 0, {"error": str(e)}


def eventually(pred, deadline_s, what):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise BenchError(f"{what}: not within {deadline_s} s")


class Console:
    """A guest's serial console through `apiary ctl instance console --follow`."""

    def __init__(self, api_addr, token_file, instance_id, name):
        self.name = name
        self.received = ""
        self.p = subprocess.Popen([APIARY, "ctl", "--api", api_addr, "--token-file", token_file,
                                   "instance", "console", instance_id, "--follow"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def wait_for(self, needle, deadline_s, start=0):
        end = time.monotonic() + deadline_s
        while needle not in self.received[start:]:
            left = end - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.p.stdout], [], [], min(left, 0.2))
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    return needle in self.received[start:]
                self.received += chunk.decode(errors="replace")
        return True

    def send(self, text):
        self.p.stdin.write(text.encode())
        self.p.stdin.flush()

    def shell(self):
        if not self.wait_for(READY, READY_S):
            raise BenchError(f"{self.name}: no ready marker within {READY_S} s:\n{self.received[-2000:]}")
        self.send("\r")
        if not self.wait_for(PROMPT, PROMPT_S, self.received.find(READY)):
            raise BenchError(f"{self.name}: no prompt within {PROMPT_S} s:\n{self.received[-2000:]}")
        m = NET_LINE.search(self.received)
        if not m:
            raise BenchError(f"{self.name}: the guest configured no NIC:\n{self.received[-2000:]}")
        return m.group(3), int(m.group(4))

    def run(self, cmd, tag, deadline_s=COMMAND_S):
        """Runs cmd in the guest's shell; the output up to the end marker. The
        terminal echoes the command, so the marker is spelled -""END there."""
        start = len(self.received)
        self.send(f"{cmd}; echo {tag}-\"\"END\r")
        end = f"\n{tag}-END"
        if not self.wait_for(end, deadline_s, start):
            raise BenchError(f"{self.name}: `{cmd}` did not end within {deadline_s} s:\n{self.received[start:][-2000:]}")
        return self.received[start:self.received.find(end, start)]

    def close(self):
        stop_process(self.p)


class Deployment:
    def __init__(self):
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="apiary-netbench-", dir=shm)
        self.services = {}
        self.consoles = []
        self.servers = []
        make_topology()
        ctl = address("ctl")
        self.token_file = os.path.join(self.dir, "token")
        self.services["ctl"] = Service("ctl", [
            "controller", "--host", ctl, "--port", str(API_PORT), "--node-port", str(NODE_PORT),
            "--store", os.path.join(self.dir, "store.sqlite"), "--token-file", self.token_file, "--insecure"],
            os.path.join(self.dir, "controller.log"))
        for n in ("n1", "n2"):
            self.services[n] = Service(n, [
                "node", "--controller", f"{ctl}:{NODE_PORT}", "--name", n, "--checkin-ms", str(CHECKIN_MS),
                "--vcpus", str(NODE_VCPUS), "--memory", str(NODE_MEMORY_MIB), "--vtep", address(n), "--insecure"],
                os.path.join(self.dir, f"{n}.log"))
        eventually(lambda: os.path.exists(self.token_file) and open(self.token_file).read().strip(),
                   NODES_UP_S, "the controller's token")
        self.api = Api(open(self.token_file).read().strip())

        def nodes_up():
            status, body = self.api.call("GET", "/v1/nodes")
            return status == 200 and sum(n.get("state") == "created" for n in body.get("nodes", [])) == 2
        try:
            eventually(nodes_up, NODES_UP_S, "both nodes registered")
        except BenchError as e:
            raise BenchError(f"{e}\n{self.logs()}")

    def logs(self):
        return "".join(f"--- {n}:\n{s.tail()}" for n, s in self.services.items())

    def network(self, name, cidr):
        status, body = self.api.call("POST", "/v1/networks", {"name": name, "cidr": cidr})
        if status not in (200, 201) or body.get("state") != "created":
            raise BenchError(f"POST /v1/networks: {status} {body}")
        return body["id"]

    def instance(self, name, net):
        spec = {"spec": {"name": name, "board": {"vcpus": 1, "memory_mib": GUEST_MIB},
                         "boot": {"kernel_path": os.path.join(GUEST_DIR, "linux-vmlinuz"),
                                  "initrd_path": os.path.join(GUEST_DIR, "linux-initramfs.cpio"),
                                  "cmdline": GUEST_CMDLINE},
                         "devices": {"nics": [{"network": net}]}}}
        status, body = self.api.call("POST", "/v1/instances", spec)
        if status != 202:
            raise BenchError(f"POST /v1/instances {name}: {status} {body}")
        iid = body["id"]
        rec = {}

        def active():
            nonlocal rec
            s, rec = self.api.call("GET", f"/v1/instances/{iid}")
            return s == 200 and rec.get("vm_state") == "active"
        try:
            eventually(active, ACTIVE_S, f"{name} active")
        except BenchError as e:
            raise BenchError(f"{e}: {rec}\n{self.logs()}")
        return rec

    def console(self, rec):
        c = Console(f"{address('ctl')}:{API_PORT}", self.token_file, rec["id"], rec["name"])
        self.consoles.append(c)
        return c

    def serve_baseline(self, root):
        """busybox httpd in namespace a, in the foreground (stopped at the end)."""
        sh(f"mkdir -p {root} && dd if=/dev/zero of={root}/blob bs=1048576 count={FILE_MIB} 2>/dev/null")
        p = subprocess.Popen(["ip", "netns", "exec", BASE_A, "busybox", "httpd", "-f", "-p", str(HTTP_PORT),
                              "-h", root], stdin=subprocess.DEVNULL)
        self.servers.append(p)

    def close(self):
        for c in self.consoles:
            c.close()
        for p in self.servers:
            stop_process(p)
        for s in self.services.values():
            s.stop()
        cleanup_network()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the cases ----------------------------------------------------------------

class Case:
    """How to run a shell line on a case's client, and the server's address."""

    def __init__(self, name, run, server):
        self.name, self.run, self.server = name, run, server
        self.loops = 1
        self.rtts = []        # every ping of every round, us
        self.mbit_s = []      # one per round
        self.exits_per_mib = []   # guests only: KVM exits per MiB moved
        self.exits_per_rtt = None
        self.cpu = []             # CPU shares during each throughput measurement

    def ping(self):
        self.rtts += parse_rtts_us(self.run(ping_script(self.server), COMMAND_S), f"{self.name}: ping")

    def transfer_s(self):
        return parse_transfer_s(self.run(fetch_script(self.server, self.loops), TRANSFER_S),
                                f"{self.name}: wget")

    def calibrate(self):
        """Also the warm-up: enough loops that one measurement lasts MIN_TRANSFER_S."""
        t = self.transfer_s()
        while t < MIN_TRANSFER_S and self.loops < MAX_LOOPS:
            self.loops = min(MAX_LOOPS, max(self.loops * 2, int(self.loops * MIN_TRANSFER_S * 1.2 / max(t, 0.01)) + 1))
            t = self.transfer_s()
        log(f"{self.name}: {self.loops} x {FILE_MIB} MiB per measurement ({t:.2f} s)")

    def throughput(self):
        t, wall, delta, shares = counted(self.transfer_s)
        if "halt_poll_success_ns" in delta and "halt_poll_fail_ns" in delta:
            shares["halt_poll"] = (delta["halt_poll_success_ns"] + delta["halt_poll_fail_ns"]) / 1e9 / wall
        self.cpu.append(shares)
        self.mbit_s.append(self.loops * FILE_MIB * 1048576 * 8 / 1e6 / t)
        if delta:
            self.exits_per_mib.append(delta["exits"] / (self.loops * FILE_MIB))

    def exit_cost(self):
        """KVM exits per round trip: a quiet ping series less an idle window."""
        idle_s = EXIT_PINGS * EXIT_PING_INTERVAL_S
        _, t_idle, idle, _ = counted(lambda: self.run(f"sleep {idle_s:g}", COMMAND_S))
        _, t_ping, busy, shares = counted(lambda: self.run(
            f"ping -q -c {EXIT_PINGS} -i {EXIT_PING_INTERVAL_S} -W {PING_WAIT_S} {self.server} >/dev/null",
            COMMAND_S))
        if not idle or not busy:
            log(f"{self.name}: no KVM counters in {KVM_STATS_DIR}; exits not counted")
            return
        per = {k: (busy[k] - idle[k] * t_ping / t_idle) / EXIT_PINGS for k in busy}
        self.exits_per_rtt = per["exits"]
        log(f"{self.name}: idle {idle['exits'] / t_idle:.0f} exits/s (all VMs); per round trip: " +
            ", ".join(f"{k} {v:.1f}" for k, v in per.items()) + f"; CPU during the pings: {shares_text(shares)}")


def host_runner(ns):
    def run(script, timeout):
        return sh(in_netns(ns, script), timeout=timeout)
    return run


def guest_runner(console):
    counter = [0]

    def run(script, timeout):
        counter[0] += 1
        return console.run(script, f"CMD{counter[0]}", timeout)
    return run


def measure(d):
    net = d.network("bench", GUEST_NETWORK_CIDR)
    # Placement by load, ties by name: a -> n1, b -> n2, c -> n1.
    recs = {name: d.instance(name, net) for name in ("a", "b", "c")}
    log("the three instances are active")
    where = {n: r.get("node") for n, r in recs.items()}
    if where["a"] != where["c"] or where["a"] == where["b"]:
        raise BenchError(f"unexpected placement {where}: need a and c on one node, b on the other")
    log(f"placement: {where}")
    consoles = {n: d.console(r) for n, r in recs.items()}
    addrs = {}
    for n, c in consoles.items():
        addrs[n], mtu = c.shell()
        log(f"guest {n} on {where[n]}: {addrs[n]} mtu {mtu}")

    # Servers: guest a, namespace a (httpd daemonizes in the guest).
    out = consoles["a"].run(serve_script("/srv") + " && echo SERV\"\"ING", "SERVE")
    if "SERVING" not in out:
        raise BenchError(f"guest a: httpd did not start:\n{out}")
    d.serve_baseline(os.path.join(d.dir, "srv"))

    cases = [Case("veth", host_runner(BASE_B), VETH_NET + "1"),
             Case("vxlan", host_runner(BASE_B), VXLAN_NET + "1"),
             Case("one_node", guest_runner(consoles["c"]), addrs["a"]),
             Case("two_nodes", guest_runner(consoles["b"]), addrs["a"])]
    for c in cases:
        c.calibrate()
    for r in range(ROUNDS):
        for c in cases:
            c.ping()
            c.throughput()
            log(f"round {r + 1}: {c.name}: rtt median {statistics.median(c.rtts[-PING_COUNT:]):.0f} us, "
                f"{c.mbit_s[-1]:.1f} Mbit/s" +
                (f", {c.exits_per_mib[-1]:.0f} KVM exits/MiB" if c.name in GUEST_CASES and c.exits_per_mib else "") +
                f"; CPU during the transfer: {shares_text(c.cpu[-1])}")
    for c in cases:
        if c.name in GUEST_CASES:
            c.exit_cost()
    log(f"drops: {drops(d)}")
    return {c.name: c for c in cases}


def drops(d):
    """The data plane's drop counters from /metrics, summed by cause."""
    req = urllib.request.Request(d.api.base + "/metrics", headers={"Authorization": f"Bearer {d.api.token}"})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_S) as r:
            text = r.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return f"(no /metrics: {e})"
    by_cause = {}
    for m in re.finditer(r'^apiary_net_port_drops_total\{[^}]*cause="([^"]+)"[^}]*\} ([0-9.e+]+)$', text, re.M):
        by_cause[m.group(1)] = by_cause.get(m.group(1), 0) + float(m.group(2))
    return ", ".join(f"{k} {v:.0f}" for k, v in by_cause.items()) or "none"


def report(cases):
    rtt = {n: statistics.median(c.rtts) for n, c in cases.items()}
    tput = {n: statistics.median(c.mbit_s) for n, c in cases.items()}
    for n in CASES:
        log(f"{n}: rtt min {min(cases[n].rtts):.0f} us, max {max(cases[n].rtts):.0f} us over "
            f"{len(cases[n].rtts)} pings; throughput {', '.join(f'{x:.1f}' for x in cases[n].mbit_s)} Mbit/s")
    for n in CASES:
        print(f"figure: net_rtt_{n}_us {rtt[n]:.0f} us")
    for n in CASES:
        print(f"figure: net_rtt_min_{n}_us {min(cases[n].rtts):.0f} us")
    for n in CASES:
        print(f"figure: net_throughput_{n}_mbit_s {tput[n]:.1f} Mbit/s")
    print(f"figure: net_rtt_one_node_ratio {rtt['one_node'] / rtt['veth']:.2f} x")
    print(f"figure: net_rtt_two_nodes_ratio {rtt['two_nodes'] / rtt['vxlan']:.2f} x")
    print(f"figure: net_rtt_min_one_node_ratio {min(cases['one_node'].rtts) / min(cases['veth'].rtts):.2f} x")
    print(f"figure: net_rtt_min_two_nodes_ratio {min(cases['two_nodes'].rtts) / min(cases['vxlan'].rtts):.2f} x")
    print(f"figure: net_throughput_one_node_ratio {tput['one_node'] / tput['veth']:.3f} x")
    print(f"figure: net_throughput_two_nodes_ratio {tput['two_nodes'] / tput['vxlan']:.3f} x")
    for n in GUEST_CASES:
        if cases[n].exits_per_rtt is not None:
            print(f"figure: net_kvm_exits_per_rtt_{n} {cases[n].exits_per_rtt:.0f} exits")
        if cases[n].exits_per_mib:
            print(f"figure: net_kvm_exits_per_mib_{n} {statistics.median(cases[n].exits_per_mib):.0f} exits")


def on_alarm(signum, frame):
    raise BenchError(f"the run took longer than {RUN_DEADLINE_S} s")


def main():
    if os.geteuid() != 0:
        log("needs root (network namespaces); run it in scripts/kvm-vm")
        return 1
    for f in ("linux-vmlinuz", "linux-initramfs.cpio"):
        if not os.path.exists(os.path.join(GUEST_DIR, f)):
            log(f"needs the built Linux guest ({GUEST_DIR}/{f})")
            return 1
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(RUN_DEADLINE_S)
    d = None
    try:
        d = Deployment()
        cases = measure(d)
        signal.alarm(0)
        report(cases)
        return 0
    except BenchError as e:
        log(str(e))
        return 1
    finally:
        signal.alarm(0)
        if d is not None:
            d.close()
        else:
            cleanup_network()


if __name__ == "__main__":
    sys.exit(main())
