#!/bin/sh
# Installs the Debian packages Apiary builds and tests with, if any is missing.
# Everything comes from Debian bookworm's archive; nothing else is downloaded.
# The second group is scripts/kvm-vm's: on a machine without /dev/kvm it
# boots Debian's kernel under QEMU (TCG, with SVM) to get a real one; the
# same kernel, busybox-static and e2fsprogs make the Linux guest (guest/linux).
set -eu
PACKAGES="build-essential cmake pkg-config binutils libcaf-dev libprotobuf-dev protobuf-compiler
libboost-dev libboost-test-dev libsqlite3-dev libssl-dev libbenchmark-dev
python3 qemu-system-x86 linux-image-amd64 busybox-static e2fsprogs iproute2 iptables"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "setup: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends $missing
