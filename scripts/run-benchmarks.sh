#!/usr/bin/env bash
# run-benchmarks.sh: runs every benchmark executable in BUILD_DIR/bench (as
# built by `cmake --build BUILD_DIR --target apiary_benchmarks`), shows each
# one's output as it runs, then repeats every `figure: <name> <value> <unit>`
# line they printed in one summary block. `make bench` calls it.
#
#   scripts/run-benchmarks.sh BUILD_DIR [ARGS...]
#
# ARGS (e.g. --benchmark_filter=Raw) are passed to every executable. The exit
# status is non-zero if any benchmark failed; the others still run.
#
# The benchmarks that need KVM (KVM_BENCHES) run through scripts/kvm-vm:
# natively where /dev/kvm works, otherwise inside one nested-KVM VM each
# (1 vCPU: with two, MTTCG's nested SVM hung bench_exit_dispatch twice; 4 GiB), so raw baselines and Apiary are measured in the same VM.
# bench_network runs with the same arguments: its three guests and two node
# processes share the one vCPU, and the run takes 6-7.5 minutes; with two
# vCPUs it was not faster per figure, and one of its two runs ended in a
# kernel panic of the VM (in KVM_RUN, nested SVM under MTTCG).
# bench_migration gets two vCPUs: with one, its source and destination VMMs
# share it with the guest and the stream, and two of three whole runs on
# 2026-12-05 stopped the VM (kvm-vm: vm_stalled, the VM's kernel stuck in a
# page copy under TCG); with two the eight cases took 5 minutes.
# The VM's own start-to-exit time is measured first and printed as a figure.
set -uo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  echo "usage: $0 BUILD_DIR [ARGS...]" >&2
  exit 2
fi
build_dir=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
KVM_BENCHES=" bench_exit_dispatch bench_instance bench_virtio_blk bench_linux_boot bench_network bench_migration "
KVM_VM=("$here/kvm-vm" --cpus 1 --memory 4096 --timeout 900 --)
KVM_VM_2CPU=("$here/kvm-vm" --cpus 2 --memory 4096 --timeout 900 --)
TWO_CPU_BENCHES=" bench_migration "
bench_dir=$build_dir/bench
if [[ ! -d "$bench_dir" ]]; then
  echo "run-benchmarks: $bench_dir does not exist (build the apiary_benchmarks target first)" >&2
  exit 2
fi

benches=()
for f in "$bench_dir"/*; do
  [[ -f "$f" && -x "$f" ]] && benches+=("$f")
done
if [[ ${#benches[@]} -eq 0 ]]; then
  echo "run-benchmarks: no benchmark executables in $bench_dir" >&2
  exit 2
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=()
start=$SECONDS

# Where KVM comes from for this run, and what the nested VM costs to start.
echo "==> kvm-vm"
t0=$(date +%s%N)
if "${KVM_VM[@]}" true; then
  ms=$((($(date +%s%N) - t0) / 1000000))
  printf 'figure: kvm_vm_start_to_exit_s %d.%02d s\n' $((ms / 1000)) $((ms % 1000 / 10)) | tee -a "$log"
else
  failed+=("kvm-vm")
fi
echo

for b in "${benches[@]}"; do
  name=$(basename "$b")
  echo "==> $name"
  # Each benchmark's stdout goes to the terminal and the log; stderr (Google
  # Benchmark's context block) straight to the terminal.
  if [[ "$TWO_CPU_BENCHES" == *" $name "* ]]; then
    "${KVM_VM_2CPU[@]}" "$b" "$@" | tee -a "$log"
  elif [[ "$KVM_BENCHES" == *" $name "* ]]; then
    "${KVM_VM[@]}" "$b" "$@" | tee -a "$log"
  else
    "$b" "$@" | tee -a "$log"
  fi
  status=${PIPESTATUS[0]}
  if [[ $status -ne 0 ]]; then
    echo "run-benchmarks: $name exited with status $status" >&2
    failed+=("$name")
  fi
  echo
done

echo "==> summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $((SECONDS - start)) s)"
if ! grep '^figure:' "$log"; then
  echo "(no figures: every benchmark was skipped or failed)"
fi
if [[ ${#failed[@]} -ne 0 ]]; then
  echo "failed: ${failed[*]}"
  exit 1
fi
