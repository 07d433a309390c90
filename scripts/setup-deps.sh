#!/bin/sh
# Installs the Debian packages Apiary builds and tests with, if any is missing.
# Everything comes from Debian's archive; nothing else is downloaded.
# The second group is scripts/kvm-vm's: on a machine without /dev/kvm it
# boots Debian's kernel under QEMU (TCG, with SVM) to get a real one; the
# same kernel, busybox-static and e2fsprogs make the Linux guest (guest/linux).
#
# QEMU comes from bookworm-backports (10.0), not bookworm (7.2): under 7.2's
# emulation of nested SVM the VM's own kernel panicked in KVM_RUN in about
# one two-vCPU VM in three ("stack guard page was hit" in error_entry,
# "corrupted stack end detected inside scheduler"); see docs/kvm-vm.md,
# "Which QEMU". Only QEMU and what it needs come from backports.
#
# The dashboard (ui/) takes its front-end packages from npm: `npm ci` in
# ui/ installs exactly what ui/package-lock.json names (no install scripts
# run), again when the lock file changes; Debian's chromium is the browser
# its tests drive (playwright-core, tests/ui).
set -eu
cd "$(dirname "$0")/.."
PACKAGES="build-essential cmake pkg-config binutils libcaf-dev libprotobuf-dev protobuf-compiler
libboost-dev libboost-test-dev libsqlite3-dev libssl-dev libbenchmark-dev libjemalloc-dev zlib1g-dev
python3 linux-image-amd64 busybox-static e2fsprogs iproute2 iptables
python3-openstackclient chromium"
QEMU_MIN="1:10.0"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=""
for p in $PACKAGES; do
  installed "$p" || missing="$missing $p"
done

qemu_ok() {
  installed qemu-system-x86 &&
    dpkg --compare-versions "$(dpkg-query -W -f='${Version}' qemu-system-x86)" ge "$QEMU_MIN"
}

ui_packages() {
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing nodejs and npm"
    $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  if [ ! -f ui/node_modules/.package-lock.json ] || [ ui/package-lock.json -nt ui/node_modules/.package-lock.json ]; then
    echo "setup: npm ci in ui/ (the dashboard's packages)"
    (cd ui && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  fi
}

if [ -z "$missing" ] && qemu_ok; then
  ui_packages
  exit 0
fi
updated=""
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  $SUDO apt-get update -qq || true
  updated=1
  $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
if ! qemu_ok; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  if [ "$codename" = bookworm ]; then
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "setup: adding Debian's bookworm-backports (for QEMU >= $QEMU_MIN)"
      printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" "Suites: bookworm-backports" \
        "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" |
        $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
      updated=""
    fi
    [ -n "$updated" ] || $SUDO apt-get update -qq || true
    echo "setup: installing qemu-system-x86 from bookworm-backports"
    $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86
  else
    # Later Debian releases carry QEMU >= 10 themselves.
    $SUDO apt-get install -y -qq --no-install-recommends qemu-system-x86
  fi
  qemu_ok || echo "setup: warning: qemu-system-x86 $(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null) is older than $QEMU_MIN; nested-KVM VMs may crash (docs/kvm-vm.md)" >&2
fi
ui_packages
