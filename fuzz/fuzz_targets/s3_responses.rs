//! What an S3 server answers (it may be hostile: SECURITY.md §1): a `Content-Range` and an
//! error body parse without panics, and an accepted range lies inside its object and
//! reads back the same from its canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::store::wire::{parse_content_range, parse_error_body};

fuzz_target!(|data: &[u8]| {
    let _ = parse_error_body(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((range, total)) = parse_content_range(text) {
        assert!(range.start <= range.end && range.end < total);
        let canonical = format!("bytes {}-{}/{}", range.start, range.end, total);
        assert_eq!(parse_content_range(&canonical), Some((range, total)));
    }
});
