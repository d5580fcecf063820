//! r2seal: client-side envelope encryption for Cloudflare R2 and S3-compatible stores.
//!
//! Every object is sealed before it leaves the process, as an [age v1] file whose
//! header can travel either in front of the body (*file form*) or in the object's
//! metadata (*metadata form*). The bucket only ever stores ciphertext.
//!
//! ```text
//!  plaintext ──► Sealer ──► (header, body) ──► store (S3 / R2 / file://)
//!                  ▲  envelope: file key wrapped to recipients, name binding,
//!                  │  sealed metadata, header MAC (format::envelope)
//!                  └─ keys: age X25519, symmetric keyring keys (keys)
//!  store ──► (header, body) ──► Opener ──► plaintext (each chunk authenticated
//!                                          before it is released)
//! ```
//!
//! The core (`format`, `keys`, `seal`) is sans-IO: it takes bytes and returns bytes,
//! builds for `wasm32-unknown-unknown` with `--no-default-features`, and is the only
//! place cryptography happens. I/O layers (the CLI, stores) sit behind features.
//!
//! # Quick start
//! ```
//! use r2seal::keys::Identity;
//! use r2seal::seal::{open_file, seal_file};
//! use r2seal::format::Binding;
//!
//! let identity = Identity::generate_x25519();
//! let binding = Binding { name: Some("sessions/2026-11-25.jsonl".into()), ..Default::default() };
//! let sealed = seal_file(&[identity.to_recipient()], binding, b"{\"role\":\"user\"}\n")?;
//! // `sealed` is a complete age file: `age -d -i key.txt` opens it too.
//! let opened = open_file(&[identity], Some("sessions/2026-11-25.jsonl"), &sealed)?;
//! assert_eq!(&opened.plaintext[..], b"{\"role\":\"user\"}\n");
//! # Ok::<(), r2seal::Error>(())
//! ```
//!
//! [age v1]: https://age-encryption.org/v1
#![forbid(unsafe_code)]
#![deny(missing_debug_implementations)]

pub mod descriptor;
mod error;
pub mod format;
pub mod keys;
pub mod names;
mod random;
pub mod seal;
#[doc(hidden)]
#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(feature = "gateway")]
pub mod gateway;
#[cfg(feature = "store")]
pub mod jobs;
#[cfg(feature = "store")]
pub mod sealed;
#[cfg(feature = "store")]
pub mod store;
#[cfg(feature = "store")]
pub mod tempfiles;

pub use error::Error;

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
