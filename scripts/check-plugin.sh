#!/usr/bin/env bash
# Checks libllmkernel.so inside unmodified llama.cpp programs built from vendor/:
#  1. the .so carries no ggml (its only ggml_* symbols are the two it exports);
#  2. llama.cpp's own test-backend-ops, `-o MUL_MAT` and `-o MUL_MAT_ID`, lists
#     the LLMK backend and passes every case it supports (the rest are reported
#     "not supported");
#  3. with LLMKERNEL_ISA=scalar the plugin declines with one log line and the
#     program runs stock.
# Run by .ci/run. Builds what it needs (cargo, scripts/build-llama-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SO=$PWD/target/release/libllmkernel.so
TBO=${LLMKERNEL_TOOLS_DIR:-$PWD/target/llama-tools}/bin/test-backend-ops
cargo build --release -p llmkernel-plugin
scripts/build-llama-tools.sh test-backend-ops

echo "--- libllmkernel.so carries no copy of ggml"
defined=$(nm -D --defined-only "$SO" | awk '{print $3}' | grep -E '^(ggml|gguf)_' | sort | tr '\n' ' ')
[ "$defined" = "ggml_backend_init ggml_backend_score " ] \
  || { echo "FAIL: ggml symbols defined in the .so: $defined"; exit 1; }
undefined=$(nm -D --undefined-only "$SO" | grep -cE ' (ggml|gguf)_' || true)
[ "$undefined" = 0 ] || { echo "FAIL: the .so links ggml symbols (they must come from the host via dlsym)"; exit 1; }
echo "ok: exports ggml_backend_init and ggml_backend_score only; ggml-base is resolved from the host at run time"

for op in MUL_MAT MUL_MAT_ID; do
  echo "--- test-backend-ops test -o $op with GGML_BACKEND_PATH=$SO"
  out=$(GGML_BACKEND_PATH=$SO "$TBO" test -o "$op" -j "$(nproc)" 2>&1) || { echo "$out" | grep -v "not supported" | tail -40; echo "FAIL: test-backend-ops -o $op"; exit 1; }
  grep -q "Backend 2/2: LLMK" <<< "$out" || { echo "$out" | tail; echo "FAIL: no LLMK backend listed"; exit 1; }
  passed=$(echo "$out" | sed -n 's/^ *\([0-9]*\)\/\([0-9]*\) tests passed/\1 \2/p' | tail -1)
  read -r ok total <<< "$passed"
  [ -n "$ok" ] && [ "$ok" = "$total" ] && [ "$ok" -gt 0 ] \
    || { echo "$out" | grep -E "FAIL|tests passed" | head; echo "FAIL: LLMK passed $ok of $total"; exit 1; }
  unsupported=$(echo "$out" | grep -c "not supported" || true)
  echo "ok: LLMK passed $ok/$total supported $op cases; $unsupported cases reported not supported"
done

echo "--- LLMKERNEL_ISA=scalar: the plugin declines, the program runs stock"
out=$(LLMKERNEL_ISA=scalar GGML_BACKEND_PATH=$SO "$TBO" test -o MUL_MAT -p "type_a=q4_K,type_b=f32,m=16,n=1,k=256," 2>&1)
echo "$out" | grep "llmkernel:" || { echo "FAIL: no log line from the plugin"; exit 1; }
grep -q "LLMK" <<< "$out" && { echo "$out"; echo "FAIL: LLMK registered under LLMKERNEL_ISA=scalar"; exit 1; }
echo "ok"
