#!/usr/bin/env bash
# Checks libllmkernel.so inside unmodified llama.cpp programs, in two hosts:
# the vendored llama.cpp (ggml 0.26.0, backend API 3) and the previous one
# (ggml 0.25.3, backend API 2; scripts/fetch-llama-cpp.sh api2, built outside vendor/):
#  1. the .so carries no ggml (its only ggml_* symbols are the two it exports);
#  2. in each host, llama.cpp's own test-backend-ops, `-o MUL_MAT` and
#     `-o MUL_MAT_ID`, lists the LLMK backend and passes every case it
#     supports (the rest are reported "not supported"; eleven very large
#     cases are left out, see `filter` below; the API-2 host runs the cases of
#     one type per kernel family);
#  3. with LLMKERNEL_ISA=scalar the plugin declines with one log line and the
#     program runs stock;
#  4. in each host, stock llama-bench with the plugin lists LLMK and runs;
#  5. in a host whose ggml it does not know (ggml_version() preloaded to say
#     0.99.0) it registers nothing, says so in one line, and the program runs
#     stock and exits 0.
# Run by .ci/run. Builds what it needs (cargo, scripts/build-llama-tools.sh).
# LLMKERNEL_PLUGIN_HOSTS="vendored api2" (default) picks the hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
SO=$PWD/target/release/libllmkernel.so
cargo build --release -p llmkernel-plugin

echo "--- libllmkernel.so carries no copy of ggml"
defined=$(nm -D --defined-only "$SO" | awk '{print $3}' | grep -E '^(ggml|gguf)_' | sort | tr '\n' ' ')
[ "$defined" = "ggml_backend_init ggml_backend_score " ] \
  || { echo "FAIL: ggml symbols defined in the .so: $defined"; exit 1; }
undefined=$(nm -D --undefined-only "$SO" | grep -cE ' (ggml|gguf)_' || true)
[ "$undefined" = 0 ] || { echo "FAIL: the .so links ggml symbols (they must come from the host via dlsym)"; exit 1; }
echo "ok: exports ggml_backend_init and ggml_backend_score only; ggml-base is resolved from the host at run time"

# check_host NAME TEST-BACKEND-OPS API [PARAMS-REGEX]: the regex (test-backend-ops -p)
# narrows the cases, for a second host of the same kernels.
check_host() {
  local name=$1 tbo=$2 api=$3 filter=${4:-.} op out passed ok total unsupported
  for op in MUL_MAT MUL_MAT_ID; do
    echo "--- $name host: test-backend-ops test -o $op -p '$filter' with GGML_BACKEND_PATH=$SO"
    out=$(GGML_BACKEND_PATH=$SO "$tbo" test -o "$op" -p "$filter" -j "$(nproc)" 2>&1) || { echo "$out" | grep -v "not supported" | tail -40; echo "FAIL: test-backend-ops -o $op"; exit 1; }
    grep -q "Backend 2/2: LLMK" <<< "$out" || { echo "$out" | tail; echo "FAIL: no LLMK backend listed"; exit 1; }
    grep -q "llmkernel: device LLMK registered.*(backend API $api)" <<< "$out" \
      || { echo "$out" | grep llmkernel; echo "FAIL: not registered for backend API $api"; exit 1; }
    passed=$(echo "$out" | sed -n 's/^ *\([0-9]*\)\/\([0-9]*\) tests passed/\1 \2/p' | tail -1)
    read -r ok total <<< "$passed"
    [ -n "$ok" ] && [ "$ok" = "$total" ] && [ "$ok" -gt 0 ] \
      || { echo "$out" | grep -E "FAIL|tests passed" | head; echo "FAIL: LLMK passed $ok of $total"; exit 1; }
    unsupported=$(echo "$out" | grep -c "not supported" || true)
    echo "ok: LLMK passed $ok/$total supported $op cases (backend API $api); $unsupported cases reported not supported"
  done

  # The decline policy (kernels/src/table.rs, ops::takes): a declined batch
  # range stays with the CPU backend. The table declines only IQ4_XS at tier
  # avx2 (not every host's tier), so the environment declines Q4_0 below the
  # panel GEMM's 16 columns.
  echo "--- $name host, LLMKERNEL_PLUGIN_DECLINE=q4_0:1-15: those Q4_0 cases stay with the CPU backend"
  out=$(LLMKERNEL_PLUGIN_DECLINE=q4_0:1-15 GGML_BACKEND_PATH=$SO "$tbo" test -o MUL_MAT -b LLMK -p 'type_a=q4_0,' 2>&1) \
    || { echo "$out" | grep -v "not supported" | tail -20; echo "FAIL: test-backend-ops with a declined range"; exit 1; }
  echo "$out" | python3 -c '
import re, sys
small = big = 0
for l in sys.stdin:
    l = re.sub(r"\x1b\[[0-9;]*m", "", l)
    m = re.search(r"MUL_MAT\(type_a=q4_0,.*?,n=(\d+),.*\):\s*(OK|not supported|FAIL)", l)
    if not m:
        continue
    n, status = int(m.group(1)), m.group(2)
    # From 16 columns up, a case may still be declined for its layout (views, strides).
    if (n < 16 and status != "not supported") or status == "FAIL":
        sys.exit(f"FAIL: n={n}: {status}: {l.strip()}")
    small += n < 16
    big += n >= 16 and status == "OK"
if small == 0 or big == 0:
    sys.exit(f"FAIL: {small} declined and {big} taken Q4_0 cases; want both")
print(f"ok: {small} Q4_0 cases below 16 columns declined, {big} from 16 up taken and passed")
'

  local one="type_a=q4_K,type_b=f32,m=16,n=1,k=256,"
  echo "--- $name host, LLMKERNEL_ISA=scalar: the plugin declines, the program runs stock"
  out=$(LLMKERNEL_ISA=scalar GGML_BACKEND_PATH=$SO "$tbo" test -o MUL_MAT -p "$one" 2>&1)
  echo "$out" | grep "llmkernel:" || { echo "FAIL: no log line from the plugin"; exit 1; }
  grep -q "LLMK" <<< "$out" && { echo "$out"; echo "FAIL: LLMK registered under LLMKERNEL_ISA=scalar"; exit 1; }
  echo "ok"

  echo "--- $name host reporting ggml 0.99.0: the plugin registers nothing, the program runs stock"
  local shim=$PWD/target/llmkernel-fake-ggml-version.so
  printf 'const char * ggml_version(void) { return "0.99.0"; }\n' | ${CC:-gcc} -shared -fPIC -x c -o "$shim" -
  local rc=0
  out=$(LD_PRELOAD=$shim GGML_BACKEND_PATH=$SO "$tbo" test -o MUL_MAT -p "$one" 2>&1) || rc=$?
  [ "$rc" = 0 ] || { echo "$out" | tail; echo "FAIL: exit code $rc"; exit 1; }
  lines=$(echo "$out" | grep -c "llmkernel:" || true)
  [ "$lines" = 1 ] || { echo "$out" | grep llmkernel; echo "FAIL: $lines plugin log lines, expected 1"; exit 1; }
  echo "$out" | grep "llmkernel:"
  echo "$out" | grep -q "host ggml 0.99.0 (backend API $api) is not one this plugin knows" \
    || { echo "FAIL: the log line does not say what it found"; exit 1; }
  grep -q "LLMK" <<< "$out" && { echo "FAIL: LLMK registered in an unknown host"; exit 1; }
  echo "$out" | grep -q "backends passed" || { echo "$out" | tail; echo "FAIL: the program did not run stock"; exit 1; }
  echo "ok"
}

# bench_host NAME TOOLS-DIR [LLAMA-SRC]: stock llama-bench with the plugin on a small
# Q4_0 model lists LLMK as its backend and runs (a smoke test: speed is in BENCHMARKS).
bench_host() {
  local name=$1 dir=$2 out
  LLMKERNEL_LLAMA_SRC=${3:-} LLMKERNEL_TOOLS_DIR=$dir scripts/build-llama-tools.sh llama-bench
  echo "--- $name host: llama-bench -p 32 -n 4 with GGML_BACKEND_PATH=$SO"
  out=$(GGML_BACKEND_PATH=$SO timeout 300 "$dir/bin/llama-bench" -m "$model" -p 32 -n 4 -r 1 -t "$(nproc)" 2>&1) \
    || { echo "$out" | tail; echo "FAIL: llama-bench"; exit 1; }
  echo "$out" | grep -E "^\| (model|llama)"
  [ "$(echo "$out" | grep -cE '^\| llama .*\| LLMK ')" = 2 ] || { echo "FAIL: LLMK not the backend of llama-bench's two rows"; exit 1; }
  echo "ok"
}
model=$(scripts/fetch-models.sh smollm2-q4_0)

# Every case but two sets of MUL_MAT_ID cases whose random data takes most of
# the suite's time, while the same kernels and code paths run in other cases:
# - the three of 128 Q4_K experts of 4096 x 2048 (0.5 GB of weights each;
#   90 s a case), whose kernels run in the smaller Q4_K MUL_MAT_ID cases;
# - the eight of 512 and 1024 IQ3_S experts of 128 x 512 (400 M weights through
#   ggml's i-quant quantizer: 100 of the 200 s MUL_MAT_ID took), whose
#   path past 256 experts runs in the Q4_0 cases of the same counts and whose
#   kernels run in the smaller IQ3_S cases.
# LLMKERNEL_PLUGIN_ALL_CASES=1 runs them.
filter='^(?!.*n_mats=128,n_used=4,b=0,m=4096,)(?!type_a=iq3_s,type_b=f32,n_mats=(512|1024),)'
[ "${LLMKERNEL_PLUGIN_ALL_CASES:-0}" = 1 ] && filter=.

for host in ${LLMKERNEL_PLUGIN_HOSTS:-vendored api2}; do
  case $host in
    vendored)
      scripts/build-llama-tools.sh test-backend-ops
      check_host "vendored llama.cpp (ggml 0.26.0)" "${LLMKERNEL_TOOLS_DIR:-$PWD/target/llama-tools}/bin/test-backend-ops" 3 "$filter"
      bench_host "vendored llama.cpp (ggml 0.26.0)" "${LLMKERNEL_TOOLS_DIR:-$PWD/target/llama-tools}" ;;
    api2)
      src=$(scripts/fetch-llama-cpp.sh api2)
      LLMKERNEL_LLAMA_SRC=$src LLMKERNEL_TOOLS_DIR=$PWD/target/llama-tools-api2 scripts/build-llama-tools.sh test-backend-ops
      # The same kernels through the other interface layout: one type of each
      # kernel family (k-quant, four-row, grid, sign planes, ternary, float)
      # stands for all, which the vendored host ran.
      check_host "llama.cpp 0c1e570 (ggml 0.25.3)" "$PWD/target/llama-tools-api2/bin/test-backend-ops" 2 \
        "${filter#.}type_a=(q4_K|q4_0|iq2_xs|iq3_s|tq1_0|f16),"
      # llama-bench in this host builds its own libllama and common (about 5
      # minutes on two cores); LLMKERNEL_PLUGIN_BENCH_API2=0 leaves it out.
      if [ "${LLMKERNEL_PLUGIN_BENCH_API2:-1}" = 1 ]; then
        bench_host "llama.cpp 0c1e570 (ggml 0.25.3)" "$PWD/target/llama-tools-api2" "$src"
      fi ;;
    *) echo "unknown host $host (vendored, api2)" >&2; exit 2 ;;
  esac
done
