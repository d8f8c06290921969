/* The vendored llama.cpp headers that llmkernel binds (see build.rs). */
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gguf.h"
#include "llama.h"
/* What a ggml backend implementation needs: the reg/device/buffer interfaces. */
#include "ggml-backend-impl.h"
/* ggml-base's block structs and reference (de)quantizers: the layouts and
   functions llmkernel's scalar references are checked against. */
#include "ggml-quants.h"
