#!/usr/bin/env bash
# Estimates the aarch64 kernels' speed without a board (issue 20): llvm-mca's
# cycles per 256 weights for each inner loop, ours against ggml's, on four
# CPU models (Cortex-A55, Cortex-A76 / Raspberry Pi 5, Neoverse-N1 /
# Graviton 2, Neoverse-V1 / Graviton 3). Static estimates of the loop body
# in steady state: no cache misses, no memory bandwidth (docs/BENCHMARKS.md
# has the roofline beside them).
#
#  - ours: the kernels crate built for aarch64 with `--features mca`, which
#    wraps every marked loop body (`mca!` in kernels/src) in
#    LLVM-MCA-BEGIN/END comments; `-C target-cpu=CPU` per model;
#  - ggml: the vendored arch/arm/quants.c (vec_dot) and repack.cpp (its
#    interleaved GEMVs) compiled by clang-19 -O3 -mcpu=CPU, LLVM as rustc
#    is; vec_dot without SVE and i8mm (its NEON + dotprod path), the
#    GEMVs with i8mm where the CPU has it; SVE paths are not estimated.
#
# Usage: scripts/arm-estimate.sh [OUT-DIR]   (default target/arm-estimate)
# Prints the markdown table; OUT-DIR/estimate.jsonl has every number.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/arm-estimate}
mkdir -p "$out"

need=()
command -v llvm-mca-19 >/dev/null || need+=(llvm-19)
command -v clang-19 >/dev/null || need+=(clang-19)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu \
  || rustup target add aarch64-unknown-linux-gnu >/dev/null

G=vendor/llama.cpp/ggml
inc=(-I$G/include -I$G/src -I$G/src/ggml-cpu)
for cpu in cortex-a55 cortex-a76 neoverse-n1 neoverse-v1; do
  echo "--- $cpu" >&2
  # A build that cargo finds up to date would emit no assembly: clean the crate first.
  cargo clean -q -p llmkernel-kernels --release --target aarch64-unknown-linux-gnu --target-dir "$out/t"
  cargo rustc -q --release -p llmkernel-kernels --target aarch64-unknown-linux-gnu \
    --features mca --target-dir "$out/t" -- --emit asm -C target-cpu=$cpu
  cp "$out"/t/aarch64-unknown-linux-gnu/release/deps/llmkernel_kernels-*.s "$out/ours-$cpu.s"
  nosve=$([ $cpu = neoverse-v1 ] && echo "+nosve" || true)
  noi8mm=$([ $cpu = neoverse-v1 ] && echo "+noi8mm" || true)
  clang-19 --target=aarch64-linux-gnu -O3 -mcpu=$cpu$nosve$noi8mm -std=gnu11 -w "${inc[@]}" \
    -S -o "$out/ggml-dot-$cpu.s" $G/src/ggml-cpu/arch/arm/quants.c
  clang-19 --target=aarch64-linux-gnu -O3 -mcpu=$cpu$nosve -std=gnu++17 -w "${inc[@]}" \
    -DGGML_USE_CPU_REPACK -S -o "$out/ggml-repack-$cpu.s" $G/src/ggml-cpu/arch/arm/repack.cpp
done
echo "llvm-mca: $(llvm-mca-19 --version | grep -m1 -o 'LLVM version [0-9.]*'); clang: $(clang-19 --version | head -1); rustc: $(rustc --version); commit $(git rev-parse --short HEAD)"
echo
python3 scripts/arm_estimate.py "$out"
