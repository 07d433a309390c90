"""Boot-file pieces shared by scripts/kvm-vm (its nested-KVM VM) and
guest/linux/make-initramfs (the Linux guest Apiary boots): the installed
Debian kernel and the ELF vmlinux inside it, a module set closed over
modules.dep, busybox-static, and an uncompressed newc cpio writer (what the
kernel unpacks; no cpio(1) needed).

Every failure is an InitramfsError with a name (kernel_missing,
modules_missing, busybox_missing) and a detail that says what to install.
"""

import lzma
import os
import shutil


class InitramfsError(Exception):
    def __init__(self, name, detail):
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


def find_kernel():
    """The version of the newest /boot/vmlinuz-* whose modules are installed."""
    found = []
    for name in os.listdir("/boot") if os.path.isdir("/boot") else []:
        if not name.startswith("vmlinuz-"):
            continue
        ver = name[len("vmlinuz-"):]
        if os.path.exists(f"/lib/modules/{ver}/modules.dep"):
            found.append((os.path.getmtime(f"/boot/{name}"), ver))
    if not found:
        raise InitramfsError("kernel_missing",
                             "no /boot/vmlinuz-* with modules in /lib/modules "
                             "(install linux-image-amd64: scripts/setup-deps.sh)")
    return sorted(found)[-1][1]


def extract_vmlinux(bzimage, dest):
    """Writes the ELF vmlinux (which has a PVH entry) carried xz-compressed in
    the bzImage: booting it directly skips the kernel's own decompression,
    seconds under emulation."""
    with open(bzimage, "rb") as f:
        data = f.read()
    pos = data.find(b"\xfd7zXZ\x00")
    while pos >= 0:
        try:
            out = lzma.LZMADecompressor().decompress(data[pos:])
        except lzma.LZMAError:
            out = b""
        if out[:4] == b"\x7fELF":
            write_atomically(dest, out)
            return
        pos = data.find(b"\xfd7zXZ\x00", pos + 1)
    raise InitramfsError("kernel_missing", f"{bzimage}: no xz-compressed ELF vmlinux inside")


def module_closure(ver, wanted, required=()):
    """Module files (relative to /lib/modules/VER) of `wanted` and their
    dependencies, dependencies first, from modules.dep. A wanted module that
    is not a file is built in (or absent) and skipped, unless `required`
    names it."""
    deps = {}
    by_name = {}
    with open(f"/lib/modules/{ver}/modules.dep") as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
            base = os.path.basename(path).split(".ko")[0]
            by_name[base.replace("-", "_")] = path
    order = []

    def visit(path):
        if path in order:
            return
        for d in reversed(deps.get(path, [])):
            visit(d)
        order.append(path)

    for m in wanted:
        path = by_name.get(m.replace("-", "_"))
        if path is None:
            if m in required:
                raise InitramfsError("modules_missing", f"{m}.ko is not in /lib/modules/{ver}")
            continue
        visit(path)
    return order


def module_entries(ver, modules):
    """cpio entries lib/modules/NAME.ko (xz modules unpacked) and a
    modules.order listing them in load order."""
    entries = []
    for m in modules:
        with open(f"/lib/modules/{ver}/{m}", "rb") as f:
            data = f.read()
        if m.endswith(".xz"):
            data = lzma.decompress(data)
        elif m.endswith(".zst") or m.endswith(".gz"):
            raise InitramfsError("modules_missing", f"{m}: compressed modules other than xz are not supported")
        entries.append((f"lib/modules/{os.path.basename(m).split('.ko')[0]}.ko", 0o100644, data))
    order = "".join(os.path.basename(m).split(".ko")[0] + ".ko\n" for m in modules)
    entries.append(("modules.order", 0o100644, order.encode()))
    return entries


def busybox_static():
    """The bytes of a statically linked busybox (Debian's busybox-static)."""
    busybox = shutil.which("busybox", path="/bin:/usr/bin")
    if busybox is None:
        raise InitramfsError("busybox_missing", "no busybox (install busybox-static: scripts/setup-deps.sh)")
    with open(busybox, "rb") as f:
        bb = f.read()
    if b"/lib64/ld-linux" in bb[:4096]:
        raise InitramfsError("busybox_missing", f"{busybox} is dynamically linked (install busybox-static)")
    return bb


def cpio_newc(entries):
    """An uncompressed newc cpio archive of (name, mode, data) entries; a
    symlink is mode 0o120777 with its target as data."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(list(entries) + [("TRAILER!!!", 0, b"")], 1):
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out += hdr.encode() + nb
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def write_atomically(dest, data):
    tmp = dest + f".tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, dest)
