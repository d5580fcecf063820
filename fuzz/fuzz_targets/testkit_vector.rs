//! The testkit's vector parser and checker (what the wasm build runs): never
//! panics on any file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::testkit::{self, Form};

fuzz_target!(|data: &[u8]| {
    let Ok(vector) = testkit::parse(data) else {
        return;
    };
    // A protected vector may name Argon2id costs up to the 1 GiB cap: fine for a
    // test, not for a fuzzer's iteration. Objects are checked in full.
    if vector.form != Form::Protected {
        let _ = vector.check();
    }
});
