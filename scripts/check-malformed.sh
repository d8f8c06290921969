#!/usr/bin/env bash
# Malformed GGUF files (tests/malformed_gguf.rs makes them from a valid
# synthetic model) against every llmkernel subcommand that reads a model, and
# against stock llama-bench without and with libllmkernel.so. Each subcommand
# must exit non-zero with one `error:` line; llama-bench must not crash with
# the plugin where it does not crash without it. Writes the matrix to
# docs/MALFORMED-GGUF.md (a change there shows in `git diff`). Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-llama-tools.sh llama-bench >/dev/null
cargo build --release -p llmkernel-plugin
doc=docs/MALFORMED-GGUF.md
tmp=$(mktemp)
LLMKERNEL_MALFORMED_DOC=$tmp \
LLMKERNEL_LLAMA_BENCH=$PWD/target/llama-tools/bin/llama-bench \
LLMKERNEL_PLUGIN=$PWD/target/release/libllmkernel.so \
  cargo test --release --test malformed_gguf -- --nocapture
{
  echo "# Malformed GGUF files: what each program says"
  echo
  echo "Made by \`scripts/check-malformed.sh\` (run by \`.ci/run\`) at commit $(git rev-parse --short=12 HEAD)."
  echo "The files come from \`tests/malformed_gguf.rs\`, which corrupts a valid synthetic model."
  echo "Each cell gives the exit code and the first line the program printed to stderr."
  echo "Every llmkernel subcommand must exit non-zero with that one \`error:\` line."
  echo "Stock llama-bench must exit the same way with the plugin as without it."
  echo "llama-bench reads no weight values, so it runs the NaN and Inf files; the plugin computes them without crashing."
  echo "On block-count-0, stock llama-bench aborts in llama.cpp's own hyperparameter check, with the plugin or without it."
  echo "llmkernel lets llama.cpp read each file's metadata in a child process first, so it refuses that file with an error instead."
  echo
  cat "$tmp"
} > "$doc"
rm -f "$tmp"
echo "ok: $doc"
