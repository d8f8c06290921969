#!/usr/bin/env bash
# llmkernel inside llama.cpp's own distributed path, on loopback: two stock
# `rpc-server -d LLMK` workers (libllmkernel.so loaded with GGML_BACKEND_PATH),
# and a stock llama-perplexity that splits SmolLM2-135M Q4_0 over them with
# `--rpc` and `-ngl 99`. Passes when
#  - each worker's counters (LLMKERNEL_STATS_FILE) show LLMK computed matmuls,
#    with the other ops of its layers on its host's CPU backend, none failed;
#  - the perplexity equals the stock local run's within 0.1 %.
# Every process it starts is stopped on exit; each step is bounded in time.
# Run by .ci/run. A two-host setup is the same with the workers on other
# machines (`-H 0.0.0.0`, a trusted network only) and their addresses in --rpc.
set -euo pipefail
cd "$(dirname "$0")/.."
SO=$PWD/target/release/libllmkernel.so
BIN=${LLMKERNEL_TOOLS_DIR:-$PWD/target/llama-tools}/bin
cargo build --release
cargo build --release -p llmkernel-plugin
scripts/build-llama-tools.sh rpc-server llama-perplexity
text=$(scripts/fetch-models.sh wiki)
model=$(scripts/fetch-models.sh smollm2-q4_0)

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

base=$((50000 + $$ % 10000))
ports=("$base" "$((base + 1))")
for i in 0 1; do
  LLMKERNEL_STATS_FILE=$tmp/stats$i.json GGML_BACKEND_PATH=$SO \
    timeout 600 "$BIN/rpc-server" -d LLMK -H 127.0.0.1 -p "${ports[$i]}" -t 1 > "$tmp/worker$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/${ports[$i]}") 2>/dev/null && break
    kill -0 "${pids[$i]}" 2>/dev/null || { cat "$tmp/worker$i.log"; echo "FAIL: worker $i exited"; exit 1; }
    sleep 0.2
  done
  grep -q "llmkernel: device LLMK registered" "$tmp/worker$i.log" \
    || { cat "$tmp/worker$i.log"; echo "FAIL: worker $i did not load LLMK"; exit 1; }
done
echo "--- two workers: $(grep -h "llmkernel: device" "$tmp"/worker*.log | head -1)"

ppl() { sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$1"; }
args=(-m "$model" -f "$text" -c 256 --chunks 2 -t "$(nproc)")
timeout 300 "$BIN/llama-perplexity" "${args[@]}" > "$tmp/local.log" 2>&1 \
  || { tail "$tmp/local.log"; echo "FAIL: local llama-perplexity"; exit 1; }
timeout 300 "$BIN/llama-perplexity" "${args[@]}" -ngl 99 \
  --rpc "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]}" > "$tmp/rpc.log" 2>&1 \
  || { tail -20 "$tmp/rpc.log"; tail "$tmp"/worker*.log; echo "FAIL: llama-perplexity --rpc"; exit 1; }
grep -E "RPC0|RPC1|RPC\[" "$tmp/rpc.log" | grep -i "buffer size" | head -4 || true
local_ppl=$(ppl "$tmp/local.log") rpc_ppl=$(ppl "$tmp/rpc.log")
echo "llama-perplexity, 2 chunks of 256: PPL $local_ppl local (stock), $rpc_ppl over two LLMK RPC workers"
python3 - "$local_ppl" "$rpc_ppl" <<'EOF'
import sys
a, b = map(float, sys.argv[1:])
rel = abs(b - a) / a
print(f"relative difference {rel:.2e} (bound 1.0e-03)")
sys.exit(0 if rel <= 1e-3 else 1)
EOF
for i in 0 1; do
  [ -f "$tmp/stats$i.json" ] || { cat "$tmp/worker$i.log"; echo "FAIL: worker $i computed no graph"; exit 1; }
  echo "worker $i: $(cat "$tmp/stats$i.json")"
  python3 - "$tmp/stats$i.json" <<'EOF' || { tail "$tmp/worker$i.log"; echo "FAIL: worker counters"; exit 1; }
import json, sys
s = json.load(open(sys.argv[1]))
ok = s["mul_mat"] > 0 and s["cpu_nodes"] > 0 and s["failed"] == 0
sys.exit(0 if ok else 1)
EOF
done
echo "ok: both workers ran their layers' matmuls on llmkernel's kernels"
