//! `Header::parse_prefix` (file form) on anything: never panics, and whatever it
//! accepts is canonical (re-serializes to exactly the bytes it consumed, which is
//! what lets the header MAC be computed over the re-serialized text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::format::header::{Header, MAX_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((header, used))) = Header::parse_prefix(data) {
        assert!(used <= data.len());
        assert_eq!(
            header.to_file_bytes(),
            &data[..used],
            "accepted a non-canonical header"
        );
        assert_eq!(Header::parse_exact(&data[..used]).as_ref(), Ok(&header));
        let mut mac_input = header.mac_input();
        mac_input.extend_from_slice(b" ");
        assert!(data.starts_with(&mac_input));
        // Every prefix is "need more bytes" or the same header.
        let cut = data.len() / 2;
        if cut < used && cut <= MAX_HEADER_BYTES {
            assert!(matches!(Header::parse_prefix(&data[..cut]), Ok(None)));
        }
    }
});
