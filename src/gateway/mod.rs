//! `r2seal gateway`: an S3 endpoint that seals what clients write and opens what they read,
//! in front of an upstream S3/R2 bucket (SECURITY.md §11).
//!
//! ```text
//! rclone / aws ──SigV4──► s3s (auth, routing, XML) ──► Gateway (S3 trait)
//!                                                        └─► SealedBucket ──► upstream
//! ```
//!
//! This module holds no cryptography and no S3 wire format: s3s verifies signatures
//! (aws-chunked too) and speaks XML; [`SealedBucket`](crate::sealed::SealedBucket) seals and opens. What lives here is
//! the mapping between the two: plaintext sizes and ETags, client checksums verified
//! against the plaintext, conditions mapped to the stored objects, and the state of
//! multipart uploads (the pending envelope, kept in memory only).
//!
//! ETags clients see (never the ciphertext's MD5, which they would take for a digest):
//! - HEAD/GET/PUT of a sealed object: the plaintext MD5 sealed in its envelope; for an
//!   object uploaded in parts, the S3-style `md5(part md5s)-N` sealed as [`ETAG_KEY`].
//! - listings, and sealed objects with neither: `r2seal-<stored ETag>`, not MD5-shaped.
//! - plaintext objects (the migration window): the stored ETag, which is theirs.

mod checksum;
mod listings;
mod server;
mod service;

pub use server::{serve, GatewayConfig};
pub use service::Gateway;

/// Sealed user-metadata entry holding the ETag a client was given for an object it
/// uploaded in parts. Never shown to clients as metadata; clients cannot set it.
pub const ETAG_KEY: &str = "r2seal-etag";
/// Prefix of ETags that stand for a stored ETag (`r2seal-<stored>`).
pub const OPAQUE_ETAG_PREFIX: &str = "r2seal-";
