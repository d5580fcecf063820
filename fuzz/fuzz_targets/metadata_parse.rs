//! The metadata form (`x-amz-meta-r2seal` value): never panics, and an accepted
//! value round-trips exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::format::header::Header;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(header) = Header::from_metadata_value(value) {
        assert_eq!(
            header.to_metadata_value().as_deref(),
            Ok(value),
            "metadata form is not canonical"
        );
        let file = header.to_file_bytes();
        assert_eq!(Header::parse_exact(&file).as_ref(), Ok(&header));
    }
});
