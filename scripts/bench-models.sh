#!/usr/bin/env bash
# Speed and memory of GGUF models with stock llama.cpp and with the plugin,
# on a quiet machine: for each model, `llama-bench -p 512 -n 128` without and
# with GGML_BACKEND_PATH (interleaved, REPS runs each, llama-bench's mean),
# then the resident memory (VmRSS) after one 512-token chunk of
# `llmkernel perplexity` with ggml's kernels and with llmkernel's (2:4
# weights are then held packed, and the mapped dense pages released).
# Prints one markdown row per model. Usage: scripts/bench-models.sh TEXT MODEL.gguf ...
set -euo pipefail
cd "$(dirname "$0")/.."
T=${THREADS:-2}
REPS=${REPS:-3}
BIN=${LLMKERNEL_TOOLS_DIR:-$PWD/target/llama-tools}/bin
text=$1
shift
cargo build --release -q
cargo build --release -q -p llmkernel-plugin
scripts/build-llama-tools.sh llama-bench >/dev/null
so=$PWD/target/release/libllmkernel.so

bench() { # model, then env assignments
  local m=$1
  shift
  env "$@" "$BIN/llama-bench" -m "$m" -t "$T" -p 512 -n 128 -r "$REPS" -o csv 2>/dev/null |
    awk -F, 'NR > 1 { gsub(/"/, ""); printf "%s ", $(NF-1) }'
}
rss() { # model, kernels
  target/release/llmkernel perplexity -m "$1" -f "$text" --chunks 1 --kernels "$2" -t "$T" --json 2>/dev/null |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["resident_bytes"] / 2**20))'
}

echo "| model | size MiB | pp512 stock | pp512 plugin | pp ratio | tg128 stock | tg128 plugin | tg ratio | RSS ggml MiB | RSS llmkernel MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for m in "$@"; do
  read -r pp_s tg_s <<<"$(bench "$m")"
  read -r pp_p tg_p <<<"$(bench "$m" GGML_BACKEND_PATH="$so")"
  size=$(( $(stat -L -c %s "$m") / 1048576 ))
  python3 - "$(basename "$m")" "$size" "$pp_s" "$pp_p" "$tg_s" "$tg_p" "$(rss "$m" ggml)" "$(rss "$m" llmkernel)" <<'EOF'
import sys
n, size, pps, ppp, tgs, tgp, rg, rl = sys.argv[1:]
pps, ppp, tgs, tgp = map(float, (pps, ppp, tgs, tgp))
print(f"| {n} | {size} | {pps:.1f} | {ppp:.1f} | {ppp / pps:.2f}× | {tgs:.1f} | {tgp:.1f} | {tgp / tgs:.2f}× | {rg} | {rl} |")
EOF
done
