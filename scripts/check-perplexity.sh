#!/usr/bin/env bash
# `llmkernel perplexity --kernels ggml` must agree with the vendored
# llama-perplexity within 0.1 % on the same model, text, context and chunks
# (a smoke test: SmolLM2-135M requantized to Q4_0, a few chunks of the
# Wikipedia text). Then both kernel sets against the model's exact reference
# (`--reference exact`: weights dequantized to F32, no activation quantized):
# llmkernel's KL-divergence from it may be at most 1.05x ggml's, plus twice
# the combined error of the two means (docs/QUALITY.md has the full runs).
# Then the model pruned 2:4 (`llmkernel prune`, Q8_0): stock llama-perplexity
# without and with the plugin (which runs the pruned matrices packed, with its
# sparse kernels) must agree within 0.25 % over 16 chunks (0.15 % measured
# here; the bound leaves room for another CPU's summation order, which the
# 8-bit activation rounding amplifies: docs/BENCHMARKS.md).
# Run by .ci/run; fetches what it needs (scripts/fetch-models.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNKS=${CHUNKS:-4}
CTX=${CTX:-512}
T=$(nproc)
BIN=${LLMKERNEL_TOOLS_DIR:-$PWD/target/llama-tools}/bin
CACHE=${LLMKERNEL_CACHE:-$HOME/.cache/llmkernel}
cargo build --release
cargo build --release -p llmkernel-plugin
scripts/build-llama-tools.sh llama-perplexity
text=$(scripts/fetch-models.sh wiki)
model=$(scripts/fetch-models.sh smollm2-q4_0)

# Fails unless |b - a| / a <= bound (a, b, bound).
within() {
  python3 - "$@" <<'EOF'
import sys
a, b, bound = map(float, sys.argv[1:])
rel = abs(b - a) / a
print(f"relative difference {rel:.2e} (bound {bound:.1e})")
sys.exit(0 if rel <= bound else 1)
EOF
}

ref=$("$BIN/llama-perplexity" -m "$model" -f "$text" -c "$CTX" --chunks "$CHUNKS" -t "$T" 2>&1 \
  | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
ours=$(target/release/llmkernel perplexity -m "$model" -f "$text" --ctx "$CTX" --chunks "$CHUNKS" \
  --kernels ggml -t "$T" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["scores"][0]["ppl"])')
echo "llama-perplexity: PPL $ref; llmkernel perplexity --kernels ggml: PPL $ours"
within "$ref" "$ours" 1e-3
target/release/llmkernel perplexity -m "$model" -f "$text" --ctx "$CTX" --chunks "$CHUNKS" --kernels both \
  --reference exact -t "$T" --json | python3 -c '
import json, sys
d = {x["of"]: x for x in json.load(sys.stdin)["divergences"] if x["base"] == "exact"}
(g, ge), (o, oe) = [(d[k]["kld_mean"], d[k]["kld_mean_err"]) for k in ("ggml", "llmkernel")]
bound = 1.05 * g + 2 * (ge * ge + oe * oe) ** 0.5
print(f"KLD from the exact reference: ggml {g:.6f} ± {ge:.6f}, llmkernel {o:.6f} ± {oe:.6f},"
      f" ratio {o / g:.4f} (bound {bound:.6f})")
sys.exit(0 if o <= bound else 1)'

pruned=$CACHE/smollm2-135m-instruct-q8_0-2_4-magnitude.gguf
[ -f "$pruned" ] || target/release/llmkernel prune "$model" "$pruned" --format q8_0 >/dev/null
ppl() {
  "$@" -m "$pruned" -f "$text" -c "$CTX" --chunks 16 -t "$T" 2>&1 |
    sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'
}
stock=$(ppl "$BIN/llama-perplexity")
plugin=$(GGML_BACKEND_PATH=$PWD/target/release/libllmkernel.so ppl "$BIN/llama-perplexity" -ot "token_embd.weight=CPU")
echo "2:4 model, llama-perplexity: PPL $stock stock, $plugin with libllmkernel.so"
within "$stock" "$plugin" 2.5e-3
