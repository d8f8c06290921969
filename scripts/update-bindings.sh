#!/usr/bin/env bash
# Regenerates backend/src/ffi/bindings.rs from the vendored headers (needs libclang:
# Debian's libclang-dev). Run after changing backend/src/ffi/wrapper.h or updating vendor/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v apt-get >/dev/null && ! ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 && {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
}
# The build script writes the bindings before any crate compiles; the build may
# then fail (the backend does not compile against stale bindings), so its exit
# status is not this script's.
{ cargo build --release --lib --message-format=json 2>/dev/null || true; } \
  | grep -o '"out_dir":"[^"]*llmkernel-[^"]*"' | tail -1 | cut -d'"' -f4 > target/.llmkernel-out-dir
out=$(cat target/.llmkernel-out-dir)
[ -f "$out/bindings.rs" ] || { echo "no generated bindings in $out" >&2; exit 1; }
cp "$out/bindings.rs" backend/src/ffi/bindings.rs
echo "backend/src/ffi/bindings.rs updated from $out"
