//! Passphrase-protected files (`r2seal-argon2id`), with a cap low enough that no
//! input can make an iteration slow: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::keys::passphrase::{is_protected, unprotect, Argon2Params, Passphrase};
use r2seal::Error;

/// The testkit's protected vectors use m=64 KiB, t=1, p=1.
const CHEAP: Argon2Params = Argon2Params {
    m_kib: 256,
    t: 2,
    p: 2,
};

fuzz_target!(|data: &[u8]| {
    let protected = is_protected(data);
    for pass in ["correct horse battery staple", ""] {
        match unprotect(data, &Passphrase::new(pass.into()), &CHEAP) {
            Ok(_) => assert!(protected, "unprotect accepted a file is_protected rejects"),
            Err(Error::KdfTooExpensive(_) | Error::WrongPassphrase | Error::Malformed(_)) => {}
            Err(Error::NotSealed | Error::UnsupportedVersion) => {}
            Err(e) => panic!("unexpected error class {e:?}"),
        }
    }
});
