#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| refreshd_fuzz_targets::destination(data));
