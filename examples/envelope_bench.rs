//! Benchmark: the per-object key work, without any payload or I/O. Run by
//! `bench/format.sh`.
//!
//! ```text
//! envelope_bench [ROUNDS] [COUNT]
//! ```
//! Each round times, back to back: age's own X25519 wrap of a file key and unwrap of a
//! stanza (`age` crate, x25519-dalek: the baselines); r2seal sealing an object's envelope
//! to the same recipient (file key, X25519 stanza, name tag, sealed metadata, header
//! MAC); opening that envelope with the identity; and opening it again with the file key
//! remembered (what a HEAD after a PUT does). Prints the medians in µs per object and
//! the seal's and open's ratios to age's wrap and unwrap alone, as one JSON line.

use std::time::Instant;

use age_core::format::FileKey;
use r2seal::format::{Binding, Envelope, FileKeyCache, SealedMetadata};
use r2seal::keys::{Identity, Recipient};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn per_op(count: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..count {
        f(i);
    }
    start.elapsed().as_secs_f64() * 1e6 / count as f64
}

fn binding(i: usize) -> Binding {
    Binding {
        name: Some(format!("agent-{:03}/sessions/{:02}.jsonl", i / 10, i % 10)),
        metadata: Some(SealedMetadata {
            size: Some(4096),
            md5: Some("9e107d9d372bb6826bd81d3542a419d6".into()),
            user: [("mtime".to_string(), "1764201600.123456789".to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("ROUNDS and COUNT are numbers"))
        .collect();
    let rounds = args.first().copied().unwrap_or(9);
    let count = args.get(1).copied().unwrap_or(2000);

    let identity = Identity::generate_x25519();
    let recipient = identity.to_recipient();
    let Recipient::X25519(age_recipient) = &recipient else {
        unreachable!("an X25519 identity has an X25519 recipient")
    };
    let identities = std::slice::from_ref(&identity);
    let recipients = std::slice::from_ref(&recipient);
    let sealed: Vec<Envelope> = (0..count)
        .map(|i| Envelope::seal(recipients, binding(i)).expect("seals"))
        .collect();
    let names: Vec<String> = (0..count).map(|i| binding(i).name.unwrap()).collect();
    let age_identity = match &identity {
        Identity::X25519(i) => i.age(),
        Identity::Sym(_) => unreachable!("generated as X25519"),
    };
    let age_stanzas: Vec<age_core::format::Stanza> = sealed
        .iter()
        .map(|e| {
            let s = &e.header().stanzas[0];
            age_core::format::Stanza {
                tag: s.tag.clone(),
                args: s.args.clone(),
                body: s.body.clone(),
            }
        })
        .collect();

    let (mut age_wrap, mut age_unwrap) = (vec![], vec![]);
    let (mut seal, mut open, mut open_cached) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        age_wrap.push(per_op(count, |_| {
            let file_key = FileKey::new(Box::new([7; 16]));
            let wrapped = age::Recipient::wrap_file_key(age_recipient, &file_key);
            std::hint::black_box(wrapped.expect("age wraps"));
        }));
        age_unwrap.push(per_op(count, |i| {
            let opened = age::Identity::unwrap_stanza(age_identity, &age_stanzas[i]);
            std::hint::black_box(opened.expect("ours").expect("opens"));
        }));
        seal.push(per_op(count, |i| {
            let envelope = Envelope::seal(recipients, binding(i)).expect("seals");
            std::hint::black_box(envelope);
        }));
        open.push(per_op(count, |i| {
            let envelope = Envelope::open(sealed[i].header(), identities, Some(&names[i]));
            std::hint::black_box(envelope.expect("opens"));
        }));
        // A fresh cache each round: the first open of an object unwraps, the second
        // (timed) takes the remembered key.
        let cache = FileKeyCache::default();
        for (envelope, name) in sealed.iter().zip(&names) {
            Envelope::open_cached(envelope.header(), identities, Some(name), &cache).unwrap();
        }
        open_cached.push(per_op(count, |i| {
            let envelope =
                Envelope::open_cached(sealed[i].header(), identities, Some(&names[i]), &cache);
            std::hint::black_box(envelope.expect("opens"));
        }));
    }
    let [age_wrap, age_unwrap, seal, open, open_cached] =
        [age_wrap, age_unwrap, seal, open, open_cached].map(median);
    println!(
        "{{\"rounds\":{rounds},\"count\":{count},\"x25519\":\"{}\",\
         \"age_wrap_us\":{age_wrap:.1},\"age_unwrap_us\":{age_unwrap:.1},\
         \"seal_us\":{seal:.1},\"open_us\":{open:.1},\"open_cached_us\":{open_cached:.1},\
         \"seal_vs_age_wrap\":{:.2},\"open_vs_age_unwrap\":{:.2}}}",
        if cfg!(feature = "aws-lc") {
            "aws-lc"
        } else {
            "age"
        },
        seal / age_wrap,
        open / age_unwrap,
    );
}
