#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenledger::fuzz_checks::form_body(data));
