#!/usr/bin/env bash
# Writes vendor/llama.cpp: the subset of a llama.cpp source tree that llmkernel
# builds, tests against and keeps as a record of upstream's build, unmodified.
#
#   scripts/vendor-llama-cpp.sh            # the current upstream (scripts/fetch-llama-cpp.sh current)
#   scripts/vendor-llama-cpp.sh <tree>     # another llama.cpp tree
#
# vendor/llama.cpp/VENDORED.md says what was kept and why; this script is that
# list, and the only way the directory is written. VENDORED.md itself is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-$(scripts/fetch-llama-cpp.sh current)}
dst=vendor/llama.cpp
[ -f "$src/ggml/include/ggml.h" ] || { echo "$src is not a llama.cpp tree" >&2; exit 2; }

keep=(
  LICENSE licenses CMakeLists.txt cmake
  ggml/CMakeLists.txt ggml/cmake ggml/include
  ggml/src/ggml-cpu ggml/src/ggml-blas ggml/src/ggml-rpc
  include src common
  tests/CMakeLists.txt tests/test-backend-ops.cpp tests/test-quantize-fns.cpp
  tools/CMakeLists.txt tools/completion tools/cli tools/server tools/mtmd tools/llama-bench
  tools/perplexity tools/quantize tools/imatrix tools/rpc
  vendor/CMakeLists.txt vendor/nlohmann vendor/cpp-httplib vendor/sheredom
  models/ggml-vocab-llama-spm.gguf
)
# Inside the kept directories: other CPU architectures, optional CPU
# accelerators, and the server's tests, benchmarks and web assets.
drop=(
  ggml/src/ggml-cpu/kleidiai ggml/src/ggml-cpu/spacemit
  tools/server/tests tools/server/bench tools/server/public tools/server/webui
)

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/t"
for p in "${keep[@]}"; do
  [ -e "$src/$p" ] || { echo "missing in $src: $p" >&2; exit 1; }
  mkdir -p "$tmp/t/$(dirname "$p")"
  cp -a "$src/$p" "$tmp/t/$p"
done
# ggml's own sources: the files at the top of ggml/src (its backends are subdirectories).
find "$src/ggml/src" -maxdepth 1 -type f \( -name '*.c' -o -name '*.cpp' -o -name '*.h' -o -name '*.in' -o -name CMakeLists.txt \) \
  -exec cp -a {} "$tmp/t/ggml/src/" \;
for p in "${drop[@]}"; do rm -rf "${tmp:?}/t/$p"; done
for a in "$tmp"/t/ggml/src/ggml-cpu/arch/*; do
  case $(basename "$a") in x86 | arm) ;; *) rm -rf "$a" ;; esac
done
[ -f "$dst/VENDORED.md" ] && cp "$dst/VENDORED.md" "$tmp/t/VENDORED.md"
rm -rf "$dst"
mv "$tmp/t" "$dst"
echo "vendor-llama-cpp: wrote $dst from $src ($(find "$dst" -type f | wc -l) files, $(du -sh "$dst" | cut -f1)); update $dst/VENDORED.md" >&2
