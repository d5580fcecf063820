//! A byte range as a user or client writes it (`r2seal get --range`, `open --range`, the
//! gateway's `x-amz-copy-source-range`): an accepted spec is one a server would honour,
//! reads back the same from its canonical form, and selects bytes inside any object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::store::ByteRange;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(range) = ByteRange::parse(text) else {
        return;
    };
    let header = range.to_header();
    let canonical = header.strip_prefix("bytes=").expect("a bytes= header");
    assert_eq!(ByteRange::parse(canonical), Some(range), "{text:?}");
    for size in [0, 1, 2, 65_536, u64::MAX] {
        if let Some(r) = range.resolve(size) {
            assert!(r.start <= r.end && r.end < size, "{text:?} in {size}: {r:?}");
        }
    }
});
