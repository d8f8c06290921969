#!/usr/bin/env bash
# Coverage-guided fuzzing of llmkernel's fuzz targets (src/fuzz.rs) with
# cargo-fuzz (libFuzzer, AddressSanitizer on the Rust code) on nightly Rust;
# installs the nightly toolchain and cargo-fuzz if they are missing.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Default: 60 seconds for each of kernels, gguf, logits_file, backend_ops.
# Each target starts from its seeds and the committed corpus
# (tests/fuzz/corpus/<target>/); the inputs it finds go to
# target/fuzz-corpus/<target>/, crashes to target/fuzz-artifacts/<target>/.
# Ends with the totals per target (runs, crashes). CI runs the same targets
# time-bounded on stable (tests/fuzz_smoke.rs), not this script.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("${@:-kernels gguf logits_file backend_ops}")
read -r -a targets <<< "${targets[*]}"

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# Seeds as files (the same as tests/fuzz_smoke.rs starts from).
LLMKERNEL_FUZZ_WRITE_SEEDS=$PWD/target/fuzz-corpus LLMKERNEL_FUZZ_SECONDS=0 \
  cargo test --release --test fuzz_smoke -q >/dev/null

for t in "${targets[@]}"; do
  corpus=target/fuzz-corpus/$t
  artifacts=target/fuzz-artifacts/$t/
  mkdir -p "$corpus" "$artifacts"
  [ -d tests/fuzz/corpus/$t ] && cp -n tests/fuzz/corpus/$t/* "$corpus"/ 2>/dev/null || true
  log=target/fuzz-$t.log
  echo "--- $t: $secs s"
  status=0
  cargo +nightly fuzz run --fuzz-dir tests/fuzz "$t" "$corpus" -- \
    -max_total_time="$secs" -max_len=65536 -rss_limit_mb=4096 -timeout=30 \
    -artifact_prefix="$artifacts" -print_final_stats=1 > "$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  crashes=$(find "$artifacts" -type f | wc -l)
  echo "$t: $runs runs, $cov, corpus $(ls "$corpus" | wc -l) inputs, $crashes crash files, exit $status"
  [ "$status" = 0 ] || tail -40 "$log"
done
