//! The sealed object format v1 (SECURITY.md §3): bytes in, bytes out, no I/O.
//!
//! - [`header`]: the age v1 header text, in file form and metadata form.
//! - [`stream`]: age's STREAM payload and its size arithmetic.
//! - [`envelope`]: the file key, recipient stanzas, header MAC, and r2seal's own
//!   stanzas (name binding, sealed metadata, parts layout).
//! - [`file_keys`]: file keys already unwrapped, so a second open skips the unwrap.
//!
//! This module and `keys` are the only places crypto primitives appear.

pub mod envelope;
pub mod file_keys;
pub mod header;
pub mod stream;

pub use envelope::{Binding, Envelope, PartsLayout, SealedMetadata, StanzaOwners};
pub use file_keys::FileKeyCache;
pub use header::Header;
