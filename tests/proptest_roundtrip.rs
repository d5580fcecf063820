//! Property tests of the sealing core: round trips around the chunk size in any
//! input slicing, both header forms, ranged reads, the parts layout, and that no
//! flipped byte or truncation ever opens.
//!
//! Case counts keep the file under ~30 s in a debug build; raise them for a soak
//! with `PROPTEST_CASES=…` (applies to every test here).

use proptest::prelude::*;
use proptest::test_runner::Config;
use r2seal::format::header::{Header, Stanza};
use r2seal::format::stream::{self, CHUNK_SIZE};
use r2seal::format::{Binding, Envelope, SealedMetadata};
use r2seal::keys::{Identity, Recipient, SymKey};
use r2seal::seal::{
    open_body, open_file, plaintext_len, seal_file, seal_parts, PayloadOpener, PayloadSealer,
    RangePlan,
};
use r2seal::Error;
use std::sync::OnceLock;

const C: usize = CHUNK_SIZE;

fn config(cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases),
        // Shrunk failures are printed; this file writes nothing beside itself.
        failure_persistence: None,
        ..Config::default()
    }
}

/// One X25519 and one symmetric identity, made once (keygen is not what is tested).
fn identities() -> &'static (Identity, Identity) {
    static IDS: OnceLock<(Identity, Identity)> = OnceLock::new();
    IDS.get_or_init(|| {
        (
            Identity::generate_x25519(),
            Identity::Sym(SymKey::generate()),
        )
    })
}

fn identity(x25519: bool) -> &'static Identity {
    let (x, s) = identities();
    if x25519 {
        x
    } else {
        s
    }
}

fn recipients(x25519: bool) -> Vec<Recipient> {
    vec![identity(x25519).to_recipient()]
}

/// Sizes at and around chunk boundaries, and anything up to ~300 KiB.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(vec![0, 1, C - 1, C, C + 1, 2 * C - 1, 2 * C, 2 * C + 1]),
        0..300 * 1024usize,
    ]
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// Feeds `input` to `f` in pieces whose sizes cycle through `cuts` (each ≥ 1).
fn in_pieces(input: &[u8], cuts: &[usize], mut f: impl FnMut(&[u8])) {
    let mut rest = input;
    for &cut in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(cut.min(rest.len()));
        f(piece);
        rest = tail;
    }
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1..64usize, 1..3 * C], 1..6)
}

fn metadata() -> impl Strategy<Value = Option<SealedMetadata>> {
    let user = prop::collection::btree_map("[a-z0-9-]{1,12}", "\\PC{0,40}", 0..4);
    prop::option::of(
        (
            prop::option::of(any::<u64>()),
            prop::option::of("[ -~]{0,60}"),
            user,
        )
            .prop_map(|(size, encoding, user)| SealedMetadata {
                size,
                content_encoding: encoding,
                user,
                ..Default::default()
            }),
    )
}

fn binding() -> impl Strategy<Value = Binding> {
    (prop::option::of("\\PC{1,80}"), metadata()).prop_map(|(name, metadata)| Binding {
        name,
        metadata,
        parts: None,
        part_salts: None,
    })
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn payload_round_trips_in_any_slicing(
        len in size(),
        seal_cuts in cuts(),
        open_cuts in cuts(),
        x25519 in any::<bool>(),
        binding in binding(),
    ) {
        let plaintext = data(len, 1);
        let name = binding.name.clone();
        let envelope = Envelope::seal(&recipients(x25519), binding).unwrap();
        let mut body = Vec::new();
        let mut sealer = PayloadSealer::new(&envelope);
        in_pieces(&plaintext, &seal_cuts, |p| sealer.update(p, &mut body));
        sealer.finish(&mut body);
        prop_assert_eq!(body.len() as u64, stream::payload_len(len as u64));
        prop_assert_eq!(plaintext_len(None, body.len() as u64).unwrap(), len as u64);

        let opened = Envelope::open(envelope.header(), std::slice::from_ref(identity(x25519)), name.as_deref()).unwrap();
        let mut opener = PayloadOpener::new(opened);
        let mut out = Vec::new();
        let mut result = Ok(());
        in_pieces(&body, &open_cuts, |p| {
            if result.is_ok() {
                result = opener.update(p, &mut out);
            }
        });
        prop_assert_eq!(result, Ok(()));
        opener.finish(&mut out).unwrap();
        prop_assert!(out == plaintext, "plaintext differs");
    }
}

fn vchar(max: usize) -> impl Strategy<Value = String> {
    // age's 1*VCHAR without ';', which the metadata form uses as its separator.
    proptest::string::string_regex(&format!("[!-:<-~]{{1,{max}}}")).unwrap()
}

fn stanza() -> impl Strategy<Value = Stanza> {
    (
        vchar(20),
        prop::collection::vec(vchar(30), 0..4),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(tag, args, body)| Stanza { tag, args, body })
}

proptest! {
    #![proptest_config(config(512))]

    /// Any header r2seal can write survives both forms unchanged.
    #[test]
    fn header_forms_round_trip(stanzas in prop::collection::vec(stanza(), 1..6), mac in any::<[u8; 32]>()) {
        let header = Header { stanzas, mac };
        let file = header.to_file_bytes();
        prop_assert_eq!(&Header::parse_exact(&file).unwrap(), &header);
        let (parsed, used) = Header::parse_prefix(&file).unwrap().unwrap();
        prop_assert_eq!(used, file.len());
        prop_assert_eq!(&parsed, &header);
        let value = header.to_metadata_value().unwrap();
        prop_assert!(value.bytes().all(|b| (0x20..0x7f).contains(&b)), "not printable: {value:?}");
        prop_assert_eq!(&Header::from_metadata_value(&value).unwrap(), &header);
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Real envelopes in the metadata form open exactly as in the file form.
    #[test]
    fn metadata_form_opens_like_the_file_form(len in 0..3 * C, x25519 in any::<bool>(), binding in binding()) {
        let plaintext = data(len, 2);
        let name = binding.name.clone();
        let file = seal_file(&recipients(x25519), binding, &plaintext).unwrap();
        let (header, used) = Header::parse_prefix(&file).unwrap().unwrap();
        let value = header.to_metadata_value().unwrap();
        prop_assert!(!value.contains('\n'));
        let parsed = Header::from_metadata_value(&value).unwrap();
        let ids = std::slice::from_ref(identity(x25519));
        let a = open_body(&parsed, ids, name.as_deref(), &file[used..]).unwrap();
        let b = open_file(ids, name.as_deref(), &file).unwrap();
        prop_assert!(a.plaintext == b.plaintext && a.plaintext[..] == plaintext[..]);
        prop_assert_eq!(a.envelope.metadata(), b.envelope.metadata());
    }

    #[test]
    fn ranged_reads_equal_the_slice(len in 1..300 * 1024usize, a in any::<u64>(), b in any::<u64>(), wide in any::<bool>()) {
        let plaintext = data(len, 3);
        let envelope = Envelope::seal(&recipients(false), Binding::default()).unwrap();
        let mut body = Vec::new();
        let mut sealer = PayloadSealer::new(&envelope);
        sealer.update(&plaintext, &mut body);
        sealer.finish(&mut body);
        let start = a % len as u64;
        // Either anywhere after start (possibly past the end: clamped) or short.
        let end = if wide { start + b % (2 * len as u64) } else { start + b % 300 };
        check_range(&envelope, &body, &plaintext, start, end)?;
    }

    #[test]
    fn parts_layout_round_trips_with_random_part_sizes(
        len in 0..300 * 1024usize,
        part in prop_oneof![1..2000usize, C - 2..C + 3, 1..200 * 1024usize],
        a in any::<u64>(),
        b in 0..3 * C as u64,
    ) {
        // At most 10,000 parts (§3.5): a smaller part size for this length is refused,
        // which `seal_parts_refuses_more_than_10000_parts` covers; here, round trips.
        let part = part.max(len.div_ceil(10_000));
        let plaintext = data(len, 4);
        let (header, body) = seal_parts(&recipients(false), Binding::default(), &plaintext, part).unwrap();
        let ids = std::slice::from_ref(identity(false));
        let opened = open_body(&header, ids, None, &body).unwrap();
        prop_assert!(opened.plaintext[..] == plaintext[..]);
        let layout = *opened.envelope.parts().unwrap();
        prop_assert_eq!(layout.count as usize, len.div_ceil(part).max(1));
        prop_assert_eq!(plaintext_len(Some(&layout), body.len() as u64).unwrap(), len as u64);
        prop_assert_eq!(plaintext_len(Some(&layout), body.len() as u64 + 1), Err(Error::Corrupt));
        if len > 0 {
            let start = a % len as u64;
            check_range(&opened.envelope, &body, &plaintext, start, start + b)?;
        }
    }
}

/// Plans and opens `start..=end`, fetching only the planned bytes.
fn check_range(
    envelope: &Envelope,
    body: &[u8],
    plaintext: &[u8],
    start: u64,
    end: u64,
) -> Result<(), TestCaseError> {
    let plan = RangePlan::new(envelope.parts(), body.len() as u64, start, end).unwrap();
    prop_assert_eq!(
        (plan.start, plan.end),
        (start, end.min(plaintext.len() as u64 - 1))
    );
    let fetched: Vec<(&[u8], &[u8])> = plan.slices(body).unwrap();
    let fetched_len: u64 = plan.pieces.iter().map(|p| p.chunks.1 - p.chunks.0).sum();
    // Only the covering chunks: at most two partial chunks of overhead per piece.
    prop_assert!(
        fetched_len <= plan.end - plan.start + 1 + plan.pieces.len() as u64 * 2 * (C as u64 + 16)
    );
    let got = plan.open(envelope, &fetched).unwrap();
    prop_assert!(
        got[..] == plaintext[plan.start as usize..=plan.end as usize],
        "range {start}-{end} differs"
    );
    Ok(())
}

/// A sealed object in some form, and how to open it.
#[derive(Debug, Clone)]
struct Object {
    header_value: Option<String>,
    bytes: Vec<u8>,
    /// Where the payload (nonce ‖ STREAM, or the first part) starts in `bytes`.
    payload_start: usize,
    name: Option<String>,
    x25519: bool,
}

impl Object {
    fn open(&self, bytes: &[u8], header_value: Option<&str>) -> Result<Vec<u8>, Error> {
        let ids = std::slice::from_ref(identity(self.x25519));
        let opened = match header_value {
            Some(v) => open_body(
                &Header::from_metadata_value(v)?,
                ids,
                self.name.as_deref(),
                bytes,
            )?,
            None => open_file(ids, self.name.as_deref(), bytes)?,
        };
        Ok(opened.plaintext.to_vec())
    }
}

/// Small objects (the tamper tests open each many times) in the file form, the
/// metadata form, and the parts layout.
fn object() -> impl Strategy<Value = (Object, Vec<u8>)> {
    (
        prop::sample::select(vec![0, 1, 100, C - 1, C, C + 1, 2 * C + 5]),
        any::<bool>(),
        binding(),
        0..3u8,
    )
        .prop_map(|(len, x25519, binding, form)| {
            let plaintext = data(len, 5);
            let name = binding.name.clone();
            let rs = recipients(x25519);
            let object = match form {
                0 => {
                    let file = seal_file(&rs, binding, &plaintext).unwrap();
                    let used = Header::parse_prefix(&file).unwrap().unwrap().1;
                    Object {
                        header_value: None,
                        bytes: file,
                        payload_start: used,
                        name,
                        x25519,
                    }
                }
                1 => {
                    let file = seal_file(&rs, binding, &plaintext).unwrap();
                    let (header, used) = Header::parse_prefix(&file).unwrap().unwrap();
                    let value = header.to_metadata_value().unwrap();
                    Object {
                        header_value: Some(value),
                        bytes: file[used..].to_vec(),
                        payload_start: 0,
                        name,
                        x25519,
                    }
                }
                _ => {
                    let (header, body) =
                        seal_parts(&rs, binding, &plaintext, 1000.max(len / 3)).unwrap();
                    let value = header.to_metadata_value().unwrap();
                    Object {
                        header_value: Some(value),
                        bytes: body,
                        payload_start: 0,
                        name,
                        x25519,
                    }
                }
            };
            (object, plaintext)
        })
}

proptest! {
    #![proptest_config(config(128))]

    /// Flip one byte anywhere (header text or body): the object must not open.
    #[test]
    fn a_flipped_byte_never_opens(
        (object, plaintext) in object(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8, any::<bool>()), 4),
    ) {
        prop_assert!(object.open(&object.bytes, object.header_value.as_deref()).unwrap() == plaintext);
        for (at, xor, in_header) in flips {
            let result = match (&object.header_value, in_header) {
                (Some(value), true) => {
                    let mut v = value.clone().into_bytes();
                    let i = at.index(v.len());
                    v[i] ^= xor;
                    // A non-UTF-8 header value cannot even reach the parser.
                    match String::from_utf8(v) {
                        Ok(v) => object.open(&object.bytes, Some(&v)),
                        Err(_) => continue,
                    }
                }
                _ => {
                    let mut bytes = object.bytes.clone();
                    let i = at.index(bytes.len());
                    bytes[i] ^= xor;
                    object.open(&bytes, object.header_value.as_deref())
                }
            };
            prop_assert!(result.is_err(), "a flipped byte still opened ({} bytes)", result.unwrap().len());
        }
    }

    /// Cut the stored bytes anywhere: the object must not open.
    #[test]
    fn truncation_anywhere_fails((object, _) in object(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 4)) {
        for at in cuts {
            let cut = at.index(object.bytes.len());
            let result = object.open(&object.bytes[..cut], object.header_value.as_deref());
            prop_assert!(result.is_err(), "opened when cut to {cut} of {} bytes", object.bytes.len());
        }
        // And at every chunk boundary of the (first) stream, and a tag's length past
        // it (where the cut-off bytes could pose as an empty final chunk).
        for boundary in (object.payload_start + 16..object.bytes.len()).step_by(C + 16) {
            for cut in [boundary, boundary + 16].into_iter().filter(|&c| c < object.bytes.len()) {
                let result = object.open(&object.bytes[..cut], object.header_value.as_deref());
                prop_assert!(result.is_err(), "opened when cut to {cut} of {} bytes", object.bytes.len());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Object-name encryption (SECURITY.md §3.10)

fn name_key() -> &'static r2seal::names::NameKey {
    static KEY: OnceLock<r2seal::names::NameKey> = OnceLock::new();
    KEY.get_or_init(|| r2seal::names::NameKey::from_sym_key(&SymKey::generate()))
}

proptest! {
    #![proptest_config(config(256))]

    /// Any UTF-8 key round-trips, keeps its `/` structure, has the predicted length,
    /// and the stored form of any prefix ending in `/` is a prefix of its stored key.
    #[test]
    fn names_round_trip_and_keep_prefixes(
        segments in proptest::collection::vec("[^/]{0,12}", 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let k = name_key();
        let plain = segments.join("/");
        let stored = k.encrypt(&plain);
        prop_assert_eq!(stored.len(), r2seal::names::encrypted_len(&plain));
        prop_assert_eq!(k.decrypt(&stored).unwrap(), plain.clone());
        prop_assert_eq!(stored.matches('/').count(), plain.matches('/').count());
        let slashes: Vec<usize> = plain.match_indices('/').map(|(i, _)| i).collect();
        if !slashes.is_empty() {
            let at = slashes[cut.index(slashes.len())];
            let lp = k.list_prefix(&plain[..=at]);
            prop_assert!(stored.starts_with(&lp.stored));
            prop_assert!(!lp.partial);
        }
    }

    /// Changing any one byte of a stored key makes it fail to decrypt (or, for a `/`
    /// inserted or removed, decrypt to nothing but an error) — never to another name.
    #[test]
    fn tampered_names_never_decrypt(
        segments in proptest::collection::vec("[a-z0-9 .]{1,10}", 1..4),
        at in any::<prop::sample::Index>(),
        to in "[a-z2-7/]",
    ) {
        let k = name_key();
        let stored = k.encrypt(&segments.join("/"));
        let i = at.index(stored.len());
        let mut bytes = stored.clone().into_bytes();
        bytes[i] = to.as_bytes()[0];
        let edited = String::from_utf8(bytes).unwrap();
        prop_assume!(edited != stored);
        prop_assert!(k.decrypt(&edited).is_err());
    }
}

/// S3 and R2 allow 10,000 parts: a part size that would need more is refused up front,
/// not sealed into an object no store can hold.
#[test]
fn seal_parts_refuses_more_than_10000_parts() {
    let plaintext = data(10_001, 4);
    let refused = seal_parts(&recipients(false), Binding::default(), &plaintext, 1);
    assert!(matches!(refused, Err(Error::Malformed(_))), "{refused:?}");
    assert!(seal_parts(
        &recipients(false),
        Binding::default(),
        &plaintext[..10_000],
        1
    )
    .is_ok());
}
