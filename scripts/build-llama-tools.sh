#!/usr/bin/env bash
# Builds stock llama.cpp programs from the unmodified sources in vendor/llama.cpp,
# the way upstream's default CMake build makes them (no cmake needed): shared
# libraries libggml-base.so, libggml-cpu.so (native ISA, OpenMP, llamafile,
# repack), libggml.so (backend registry, CPU backend compiled in, GGML_BACKEND_DL
# off), libllama.so, libllama-common.so, and the programs
#
#   test-backend-ops llama-bench llama-perplexity llama-quantize llama-imatrix llama-completion rpc-server
#
# with the RPC backend (libggml-rpc.so, registered by libggml as GGML_RPC=ON
# builds do) when the tree has it, so every program takes `--rpc` and
# rpc-server (upstream's ggml-rpc-server) serves this machine's devices.
#
# into target/llama-tools/bin (override with LLMKERNEL_TOOLS_DIR). LLMKERNEL_LLAMA_SRC
# builds another llama.cpp tree than vendor/ (e.g. the previous one, from
# `scripts/fetch-llama-cpp.sh api2`, a host of backend API 2); use another
# LLMKERNEL_TOOLS_DIR for it. Arguments
# name a subset of the programs, e.g. `scripts/build-llama-tools.sh test-backend-ops`.
# Incremental: objects newer than their source and flags are kept.
# LLMKERNEL_GGML_CPU=<compiler flags> builds ggml-cpu for another ISA than this
# machine's best (default -march=native without AMX / -mcpu=native, as GGML_NATIVE), e.g.
# "-mavx2 -mfma -mf16c" for ggml's AVX2 code paths; use another
# LLMKERNEL_TOOLS_DIR for such a build.
#
# These are the hosts for checking libllmkernel.so inside unmodified llama.cpp:
#   GGML_BACKEND_PATH=$PWD/target/release/libllmkernel.so target/llama-tools/bin/test-backend-ops -o MUL_MAT
#
# llama-cli is not built: in this llama.cpp it is the chat client of llama-server
# and needs the web UI assets, which are not vendored; llama-completion is the
# common-based command-line generator (the former llama-cli).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
L=${LLMKERNEL_LLAMA_SRC:-$ROOT/vendor/llama.cpp}
OUT=${LLMKERNEL_TOOLS_DIR:-$ROOT/target/llama-tools}
JOBS=${JOBS:-$(nproc)}
CC=${CC:-gcc}
CXX=${CXX:-g++}
ALL_TOOLS="test-backend-ops llama-bench llama-perplexity llama-quantize llama-imatrix llama-completion rpc-server"
TOOLS=${*:-$ALL_TOOLS}
for t in $TOOLS; do
  case " $ALL_TOOLS " in *" $t "*) ;; *) echo "unknown program: $t (one of: $ALL_TOOLS)" >&2; exit 2 ;; esac
done

if [ -n "${LLMKERNEL_LLAMA_SRC:-}" ]; then
  # Another tree: its ggml version from its CMakeLists.txt, as upstream's build takes it.
  v() { sed -n "s/^set($1 \([0-9]*\))/\1/p" "$L/ggml/CMakeLists.txt"; }
  GGML_VERSION="$(v GGML_VERSION_MAJOR).$(v GGML_VERSION_MINOR).$(v GGML_VERSION_PATCH)"
  LLAMA_VERSION=0.0.0
  COMMIT=$(basename "$(dirname "$L")")
else
  GGML_VERSION=$(sed -n 's/^const GGML_VERSION: &str = "\(.*\)";/\1/p' build.rs)
  LLAMA_VERSION=$(sed -n 's/^const LLAMA_VERSION: &str = "\(.*\)";/\1/p' build.rs)
  COMMIT=$(sed -n 's/^const UPSTREAM_COMMIT: &str = "\(.*\)";/\1/p' build.rs)
fi
ARCH=$(uname -m)
case "$ARCH" in
  # No AMX: the vendored AMX matmul faults on AMX CPUs when GCC drops its tile
  # configuration as dead stores (ggml-org/llama.cpp#26954; build.rs NO_AMX).
  x86_64) ARCH_DIR=x86; NATIVE=${LLMKERNEL_GGML_CPU:--march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16} ;;
  aarch64) ARCH_DIR=arm; NATIVE=${LLMKERNEL_GGML_CPU:--mcpu=native} ;;
  *) echo "unsupported architecture $ARCH" >&2; exit 1 ;;
esac

mkdir -p "$OUT/gen" "$OUT/obj" "$OUT/lib" "$OUT/bin"
write_if_changed() { # file, text
  if [ ! -f "$1" ] || [ "$(cat "$1")" != "$2" ]; then printf '%s\n' "$2" > "$1"; fi
}
write_if_changed "$OUT/gen/ggml-version.h" "#pragma once
#define GGML_VERSION \"$GGML_VERSION\"
#define GGML_COMMIT \"$COMMIT\""
write_if_changed "$OUT/gen/llama-version.h" "#pragma once
#define LLAMA_VERSION \"$LLAMA_VERSION\"
#define LLAMA_COMMIT \"$COMMIT\""
write_if_changed "$OUT/gen/build-info.cpp" "$(sed -e "s/@LLAMA_BUILD_NUMBER@/0/" \
  -e "s/@LLAMA_BUILD_COMMIT@/$COMMIT/" -e "s/@BUILD_COMPILER@/$($CXX --version | head -1)/" \
  -e "s/@BUILD_TARGET@/$ARCH-linux-gnu/" "$L/common/build-info.cpp.in")"
models=("$L"/src/models/*.cpp)
for ((i = 0; i * 16 < ${#models[@]}; i++)); do
  write_if_changed "$OUT/gen/models-unity-$i.cpp" \
    "$(printf '#include "%s"\n' "${models[@]:i*16:16}")"
done

BASE="-O3 -DNDEBUG -fPIC -pthread -w -D_GNU_SOURCE -D_XOPEN_SOURCE=600 -DGGML_SCHED_MAX_COPIES=4 \
 -I$OUT/gen -I$L/ggml/include -I$L/ggml/src -DGGML_SHARED -DLLAMA_SHARED"
CPU="-I$L/ggml/src/ggml-cpu $NATIVE -fopenmp -DGGML_USE_OPENMP -DGGML_USE_LLAMAFILE -DGGML_USE_CPU_REPACK -DGGML_BACKEND_SHARED -DGGML_BACKEND_BUILD"
LLAMA_INC="-I$L/include -I$L/src"
COMMON_INC="-I$L/include -I$L/common -I$L/vendor -DLLAMA_SUBPROCESS"

JOBFILE=$(mktemp); trap 'rm -f "$JOBFILE"' EXIT
declare -A OBJS
# obj GROUP COMPILER FLAGS SRC...: queues compiles whose object is missing or
# stale: older than its source, or built with other flags or from another tree
# or version (a re-vendored tree keeps upstream's file dates, older than the objects).
obj() {
  local group=$1 comp=$2 flags=$3; shift 3
  local stamp="$OUT/obj/$group.flags" id="$L ggml $GGML_VERSION $COMMIT: $comp $flags"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$id" ] || { rm -f "$OUT/obj/$group."*.o; echo "$id" > "$stamp"; }
  for src in "$@"; do
    local o="$OUT/obj/$group.$(echo "${src#"$ROOT"/}" | tr '/' '_').o"
    OBJS[$group]+=" $o"
    [ "$o" -nt "$src" ] || echo "$comp $flags -c $src -o $o" >> "$JOBFILE"
  done
}
ggml_src=$L/ggml/src
obj base-c "$CC" "$BASE -std=gnu11 -DGGML_BUILD" $ggml_src/{ggml.c,ggml-alloc.c,ggml-quants.c}
obj base-cxx "$CXX" "$BASE -std=gnu++17 -DGGML_BUILD" \
  $ggml_src/{ggml.cpp,ggml-backend.cpp,ggml-backend-meta.cpp,ggml-opt.cpp,ggml-threading.cpp,gguf.cpp}
obj cpu-c "$CC" "$BASE $CPU -std=gnu11 -DGGML_BUILD" \
  $ggml_src/ggml-cpu/{ggml-cpu.c,quants.c,arch/$ARCH_DIR/quants.c}
obj cpu-cxx "$CXX" "$BASE $CPU -std=gnu++17 -DGGML_BUILD" \
  $ggml_src/ggml-cpu/{ggml-cpu.cpp,repack.cpp,hbm.cpp,traits.cpp,amx/amx.cpp,amx/mmq.cpp,tiled/tiled.cpp,tiled/tiled-kernel.cpp,binary-ops.cpp,unary-ops.cpp,vec.cpp,ops.cpp,llamafile/sgemm.cpp,arch/$ARCH_DIR/repack.cpp}
RPC=false
[ -f "$ggml_src/ggml-rpc/ggml-rpc.cpp" ] && RPC=true
if $RPC; then
  obj rpc "$CXX" "$BASE -std=gnu++17 -DGGML_BUILD -DGGML_BACKEND_SHARED -DGGML_BACKEND_BUILD" \
    $ggml_src/ggml-rpc/{ggml-rpc.cpp,transport.cpp}
  obj reg "$CXX" "$BASE -std=gnu++17 -DGGML_BUILD -DGGML_USE_CPU -DGGML_USE_RPC" $ggml_src/{ggml-backend-reg.cpp,ggml-backend-dl.cpp}
else
  obj reg "$CXX" "$BASE -std=gnu++17 -DGGML_BUILD -DGGML_USE_CPU" $ggml_src/{ggml-backend-reg.cpp,ggml-backend-dl.cpp}
fi
for t in $TOOLS; do
  [ "$t" = rpc-server ] && ! $RPC && { echo "rpc-server: $L has no ggml/src/ggml-rpc" >&2; exit 2; }
done
needs_llama=false
for t in $TOOLS; do case $t in test-backend-ops | rpc-server) ;; *) needs_llama=true ;; esac; done
if $needs_llama; then
  obj llama "$CXX" "$BASE $LLAMA_INC -std=gnu++17 -DLLAMA_BUILD" "$L"/src/*.cpp "$OUT"/gen/models-unity-*.cpp
  obj common "$CXX" "$BASE $COMMON_INC -std=gnu++17" "$L"/common/*.cpp "$L"/common/jinja/*.cpp \
    "$L"/common/parsers/*.cpp "$OUT/gen/build-info.cpp"
  # cpp-httplib (model downloads in common; built without OpenSSL, as when none is found)
  obj httplib "$CXX" "$BASE -std=gnu++17 -DCPPHTTPLIB_FORM_URL_ENCODED_PAYLOAD_MAX_LENGTH=1048576 \
 -DCPPHTTPLIB_LISTEN_BACKLOG=512 -DCPPHTTPLIB_REQUEST_URI_MAX_LENGTH=32768 -DCPPHTTPLIB_TCP_NODELAY=1" \
    "$L/vendor/cpp-httplib/httplib.cpp"
fi
declare -A TOOL_SRC=(
  [test-backend-ops]="$L/tests/test-backend-ops.cpp"
  [llama-bench]="$L/tools/llama-bench/llama-bench.cpp $L/tools/llama-bench/main.cpp"
  [llama-perplexity]="$L/tools/perplexity/perplexity.cpp $L/tools/perplexity/main.cpp"
  [llama-quantize]="$L/tools/quantize/quantize.cpp $L/tools/quantize/main.cpp"
  [llama-completion]="$L/tools/completion/completion.cpp $L/tools/completion/main.cpp"
  [llama-imatrix]="$L/tools/imatrix/imatrix.cpp"
  [rpc-server]="$L/tools/rpc/rpc-server.cpp"
)
for t in $TOOLS; do
  # shellcheck disable=SC2086
  obj "$t" "$CXX" "$BASE $COMMON_INC -std=gnu++17 -I$(dirname ${TOOL_SRC[$t]%% *})" ${TOOL_SRC[$t]}
done

n=$(wc -l < "$JOBFILE")
echo "build-llama-tools: compiling $n translation units with $JOBS jobs into $OUT" >&2
if [ "$n" -gt 0 ]; then
  xargs -P "$JOBS" -d '\n' -I{} sh -c '{} || { echo "FAILED: {}" >&2; exit 255; }' < "$JOBFILE"
fi

# link LIB GROUPS LIBS: a shared library from groups' objects, when stale.
link_so() {
  local lib=$OUT/lib/lib$1.so groups=$2 libs=$3 objs="" g
  for g in $groups; do objs+=" ${OBJS[$g]}"; done
  # shellcheck disable=SC2086
  if [ ! -f "$lib" ] || [ -n "$(find $objs -newer "$lib" 2>/dev/null | head -1)" ]; then
    $CXX -shared -o "$lib" $objs -L"$OUT/lib" -Wl,-rpath,'$ORIGIN' $libs -pthread
  fi
}
link_so ggml-base "base-c base-cxx" "-lm"
link_so ggml-cpu "cpu-c cpu-cxx" "-lggml-base -fopenmp -lm"
if $RPC; then
  link_so ggml-rpc "rpc" "-lggml-base"
  link_so ggml "reg" "-lggml-cpu -lggml-rpc -lggml-base -ldl"
else
  link_so ggml "reg" "-lggml-cpu -lggml-base -ldl"
fi
if $needs_llama; then
  link_so llama "llama" "-lggml -lggml-cpu -lggml-base"
  link_so llama-common "common httplib" "-lllama -lggml -lggml-base"
fi
for t in $TOOLS; do
  libs="-lggml -lggml-cpu -lggml-base"
  case $t in test-backend-ops | rpc-server) ;; *) libs="-lllama-common -lllama $libs" ;; esac
  # shellcheck disable=SC2086
  $CXX -o "$OUT/bin/$t" ${OBJS[$t]} -L"$OUT/lib" -Wl,-rpath,"$OUT/lib" $libs -pthread
done
echo "build-llama-tools: built $TOOLS in $OUT/bin" >&2
