#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| llmkernel::fuzz::logits_file(data));
