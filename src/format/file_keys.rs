//! File keys this process already holds, so that opening the same envelope again skips
//! the recipient unwrap: an X25519 agreement, the main cost of a HEAD or a small GET
//! (a gateway answering rclone's HEAD after each PUT spent 15% of its CPU in X25519).
//!
//! An entry is found by the SHA-256 of the header's *recipient stanzas* (all but
//! r2seal's own `r2seal-name`/`-meta`/`-parts`/`-salts`). Unwrapping is a function of those
//! stanzas and the identities, so for the same identities the cached key is exactly the
//! key an unwrap would give; every other check of [`Envelope::open`] (header MAC, name
//! binding, sealed metadata, parts layout) still runs. A cache belongs to one set of
//! identities: whoever changes the identities starts a new one, and a key is remembered
//! at seal time only when one of those identities is a recipient (SECURITY.md §3.2).
//!
//! Bounded: two generations of [`FileKeyCache::PER_GENERATION`] entries; a full young
//! generation becomes the old one and the previous old one is dropped. A hit in the old
//! generation stays there: moving it up would fill the young one and turn the
//! generations over on every pass of a client that re-reads the same tree (rclone
//! `sync` HEADs every object each time). A tree of up to one generation stays cached
//! for good, one of up to two until new keys fill the young generation. Keys zeroize
//! when dropped; nothing here prints them.

use std::collections::HashMap;
use std::sync::Mutex;

use age_core::format::FileKey;
use age_core::secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::envelope::{Envelope, META_TAG, NAME_TAG, PARTS_TAG, SALTS_TAG};
use super::header::{Header, Stanza};

/// Which recipient stanzas a file key was unwrapped from.
pub(crate) type StanzasId = [u8; 32];

/// A bounded map from recipient stanzas to the file key they wrap. Cheap to share
/// (`Arc`); safe to use from several threads.
pub struct FileKeyCache {
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: HashMap<StanzasId, FileKey>,
    old: HashMap<StanzasId, FileKey>,
}

impl FileKeyCache {
    /// Entries per generation: at most twice this many keys are held (2.2 MiB when
    /// full, measured). Sized for an agent's state tree that a sync re-reads every 30 s.
    pub const PER_GENERATION: usize = 8_192;

    pub fn new() -> FileKeyCache {
        FileKeyCache {
            generations: Mutex::new(Generations::default()),
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remember the key of an envelope this process sealed or opened.
    pub fn remember(&self, envelope: &Envelope) {
        self.insert(stanzas_id(envelope.header()), envelope.file_key());
    }

    pub(crate) fn get(&self, id: &StanzasId) -> Option<FileKey> {
        let g = self.lock();
        g.young.get(id).or_else(|| g.old.get(id)).map(copy)
    }

    pub(crate) fn insert(&self, id: StanzasId, key: &FileKey) {
        self.lock().insert(id, copy(key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that matters: every entry is a complete key.
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for FileKeyCache {
    fn default() -> Self {
        FileKeyCache::new()
    }
}

impl Generations {
    fn insert(&mut self, id: StanzasId, key: FileKey) {
        if self.old.contains_key(&id) {
            return; // the same stanzas wrap the same key
        }
        if self.young.len() >= FileKeyCache::PER_GENERATION && !self.young.contains_key(&id) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(id, key);
    }
}

impl std::fmt::Debug for FileKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyCache")
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

fn copy(key: &FileKey) -> FileKey {
    FileKey::init_with_mut(|k| k.copy_from_slice(key.expose_secret()))
}

/// SHA-256 over the recipient stanzas, each length-prefixed (tag, arguments, body).
pub(crate) fn stanzas_id(header: &Header) -> StanzasId {
    let mut h = Sha256::new();
    h.update(b"r2seal/v1 recipient stanzas\0");
    let field = |h: &mut Sha256, bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    for stanza in header.stanzas.iter().filter(|s| is_recipient_stanza(s)) {
        field(&mut h, stanza.tag.as_bytes());
        h.update((stanza.args.len() as u64).to_be_bytes());
        for arg in &stanza.args {
            field(&mut h, arg.as_bytes());
        }
        field(&mut h, &stanza.body);
    }
    h.finalize().into()
}

fn is_recipient_stanza(stanza: &Stanza) -> bool {
    ![NAME_TAG, META_TAG, PARTS_TAG, SALTS_TAG].contains(&stanza.tag.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Binding;
    use crate::keys::Identity;
    use crate::Error;

    fn sealed(x: &Identity, name: &str) -> Envelope {
        Envelope::seal(
            &[x.to_recipient()],
            Binding {
                name: Some(name.into()),
                metadata: Some(Default::default()),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn a_second_open_takes_the_key_from_the_cache_and_still_checks_the_rest() {
        let x = Identity::generate_x25519();
        let env = sealed(&x, "k");
        let cache = FileKeyCache::new();
        let id = std::slice::from_ref(&x);
        let first = Envelope::open_cached(env.header(), id, Some("k"), &cache).unwrap();
        assert_eq!(cache.len(), 1);
        // Without identities only the cache can supply the key: proof that it did.
        assert_eq!(
            Envelope::open(env.header(), &[], Some("k")).err(),
            Some(Error::NoMatchingIdentity)
        );
        let again = Envelope::open_cached(env.header(), &[], Some("k"), &cache).unwrap();
        assert_eq!(again.metadata(), first.metadata());
        assert_eq!(
            again.file_key().expose_secret(),
            env.file_key().expose_secret()
        );
        // The name binding and the header MAC are still checked on a hit.
        assert_eq!(
            Envelope::open_cached(env.header(), &[], Some("other"), &cache).err(),
            Some(Error::WrongName)
        );
        let mut tampered = env.header().clone();
        let meta = tampered
            .stanzas
            .iter_mut()
            .find(|s| s.tag == META_TAG)
            .unwrap();
        meta.body[0] ^= 1;
        assert_eq!(
            stanzas_id(&tampered),
            stanzas_id(env.header()),
            "same recipients"
        );
        assert_eq!(
            Envelope::open_cached(&tampered, &[], Some("k"), &cache).err(),
            Some(Error::Corrupt)
        );
        let mut remac = env.header().clone();
        remac.mac[0] ^= 1;
        assert_eq!(
            Envelope::open_cached(&remac, &[], Some("k"), &cache).err(),
            Some(Error::Corrupt)
        );
    }

    #[test]
    fn failed_opens_are_not_remembered_and_other_recipients_miss() {
        let (x, y) = (Identity::generate_x25519(), Identity::generate_x25519());
        let env = sealed(&x, "k");
        let cache = FileKeyCache::new();
        assert_eq!(
            Envelope::open_cached(env.header(), std::slice::from_ref(&x), Some("no"), &cache).err(),
            Some(Error::WrongName)
        );
        assert!(cache.is_empty());
        cache.remember(&env);
        let other = sealed(&y, "k");
        assert_ne!(stanzas_id(other.header()), stanzas_id(env.header()));
        assert_eq!(
            Envelope::open_cached(other.header(), &[], Some("k"), &cache).err(),
            Some(Error::NoMatchingIdentity)
        );
    }

    fn ids(range: std::ops::Range<usize>) -> impl Iterator<Item = StanzasId> {
        // Entries need distinct stanzas, not real envelopes.
        range.map(|i| Sha256::digest(i.to_be_bytes()).into())
    }

    #[test]
    fn a_tree_read_again_and_again_stays_cached_up_to_two_generations() {
        let x = Identity::generate_x25519();
        let key = sealed(&x, "k");
        let cache = FileKeyCache::new();
        // One and a half generations, read in the same order each pass, as a sync does.
        let tree = 0..(3 * FileKeyCache::PER_GENERATION / 2);
        for id in ids(tree.clone()) {
            assert!(cache.get(&id).is_none());
            cache.insert(id, key.file_key());
        }
        for _pass in 0..3 {
            let misses = ids(tree.clone())
                .filter(|id| cache.get(id).is_none())
                .count();
            assert_eq!(misses, 0);
        }
        assert_eq!(cache.len(), tree.len());
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_the_oldest() {
        let x = Identity::generate_x25519();
        let cache = FileKeyCache::new();
        let first = sealed(&x, "first");
        cache.remember(&first);
        assert!(Envelope::open_cached(first.header(), &[], Some("first"), &cache).is_ok());
        for id in ids(0..3 * FileKeyCache::PER_GENERATION) {
            cache.insert(id, first.file_key());
            assert!(cache.len() <= 2 * FileKeyCache::PER_GENERATION);
        }
        assert_eq!(
            Envelope::open_cached(first.header(), &[], Some("first"), &cache).err(),
            Some(Error::NoMatchingIdentity)
        );
        // At least the newest generation's worth is still there.
        let kept = ids(2 * FileKeyCache::PER_GENERATION..3 * FileKeyCache::PER_GENERATION);
        assert!(kept.into_iter().all(|id| cache.get(&id).is_some()));
    }

    #[test]
    fn debug_shows_no_key() {
        let x = Identity::generate_x25519();
        let env = sealed(&x, "k");
        let cache = FileKeyCache::new();
        cache.remember(&env);
        let shown = format!("{cache:?}");
        assert_eq!(shown, "FileKeyCache { keys: 1, .. }");
        let key = env.file_key().expose_secret();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex));
    }
}
