#!/usr/bin/env bash
# `llmkernel perplexity --kernels ggml` must agree with the vendored
# llama-perplexity within 0.1 % on the same model, text, context and chunks
# (a smoke test: SmolLM2-135M requantized to Q4_0, a few chunks of the
# Wikipedia text). Then the same model with llmkernel's kernels, for the log.
# Run by .ci/run; fetches what it needs (scripts/fetch-models.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNKS=${CHUNKS:-4}
CTX=${CTX:-512}
T=$(nproc)
BIN=${LLMKERNEL_TOOLS_DIR:-$PWD/target/llama-tools}/bin
CACHE=${LLMKERNEL_CACHE:-$HOME/.cache/llmkernel}
cargo build --release
scripts/build-llama-tools.sh llama-perplexity
src=$(scripts/fetch-models.sh smollm2)
text=$(scripts/fetch-models.sh wiki)
model=$CACHE/smollm2-135m-instruct-q4_0.gguf
[ -f "$model" ] || target/release/llmkernel quantize "$src" "$model" --format q4_0 >/dev/null

ref=$("$BIN/llama-perplexity" -m "$model" -f "$text" -c "$CTX" --chunks "$CHUNKS" -t "$T" 2>&1 \
  | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
ours=$(target/release/llmkernel perplexity -m "$model" -f "$text" --ctx "$CTX" --chunks "$CHUNKS" \
  --kernels ggml -t "$T" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["scores"][0]["ppl"])')
echo "llama-perplexity: PPL $ref; llmkernel perplexity --kernels ggml: PPL $ours"
python3 - "$ref" "$ours" <<'EOF'
import sys
ref, ours = float(sys.argv[1]), float(sys.argv[2])
rel = abs(ours - ref) / ref
print(f"relative difference {rel:.2e} (bound 1e-3)")
sys.exit(0 if rel <= 1e-3 else 1)
EOF
target/release/llmkernel perplexity -m "$model" -f "$text" --ctx "$CTX" --chunks "$CHUNKS" --kernels both -t "$T"
