//! What `r2seal export` reads from a bucket it does not trust: object keys become local
//! paths, and rclone's `mtime` metadata becomes a file time. A key maps only to a plain
//! relative path inside the export directory (never `..`, absolute, or one of export's
//! own names); an accepted `mtime` reads back the same from its canonical form. Job
//! shards (`--shard K/N`) parse alike.
#![no_main]

use std::path::Component;

use libfuzzer_sys::fuzz_target;
use r2seal::jobs::export::{format_mtime, local_path, parse_mtime, MANIFEST, TEMP_PREFIX};
use r2seal::jobs::Shard;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = local_path(text) {
        assert!(path.is_relative(), "{text:?} -> {path:?}");
        assert!(path.components().count() > 0);
        for c in path.components() {
            let Component::Normal(name) = c else {
                panic!("{text:?} -> {path:?}: {c:?} is not a plain name");
            };
            assert!(!name.to_string_lossy().starts_with(TEMP_PREFIX));
        }
        assert_ne!(path.to_str(), Some(MANIFEST));
    }
    if let Some(t) = parse_mtime(text) {
        let canonical = format_mtime(t).expect("an accepted mtime is after the epoch");
        assert_eq!(parse_mtime(&canonical), Some(t));
    }
    if let Ok(shard) = text.parse::<Shard>() {
        assert_eq!(shard.to_string().parse::<Shard>().ok(), Some(shard));
    }
});
