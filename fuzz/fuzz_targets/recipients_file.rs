//! Recipients files (`age -R` format): never panics; parsed recipients survive a
//! round trip through their text form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::keys::files::parse_recipients_file;
use r2seal::keys::Recipient;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(recipients) = parse_recipients_file(text) {
        for r in recipients {
            if let Recipient::X25519(x) = &r {
                let again = Recipient::parse(&x.to_string()).expect("an age1… recipient reparses");
                assert_eq!(again.key_id(), r.key_id());
            }
        }
    }
});
