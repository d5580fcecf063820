//! Listings under encrypted names, in plaintext key order, kept between one client's pages.
//!
//! The store lists in stored-key order, which under encrypted names is the ciphertext's,
//! while S3 clients take listings to be sorted by key (`aws s3 sync` merges them with a
//! sorted local walk, and takes objects out of place for missing). A sorted page needs
//! the whole prefix (one level of it, with a delimiter): listed upstream, decrypted and
//! sorted. Listing it again for every page made a listing of n objects cost n²/1000
//! entries; instead the sorted listing is kept, keyed by where its next page starts
//! (bucket, prefix, delimiter and the last key given, which is what the continuation
//! token or v1 marker carries), and the next page is cut from it.
//!
//! A kept listing is what the bucket held when its first page was made: later pages do
//! not show objects written since, as a client paging through S3 may or may not see them.
//! It is dropped after its last page, after [`KEPT_FOR`], or oldest first when all kept
//! listings would pass [`KEPT_BYTES`]; a page whose listing is gone lists again, as
//! before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sealed::{ListPage, ListedObject};

/// How long a sorted listing is kept for its next page.
pub(crate) const KEPT_FOR: Duration = Duration::from_secs(300);
/// Memory for all kept listings together (an estimate: key, stored key and ETag bytes
/// plus each entry's fixed size). A listing larger than this is not kept.
pub(crate) const KEPT_BYTES: usize = 128 << 20;

/// An entry of a sorted listing.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    Object(ListedObject),
    Prefix(String),
}

impl Entry {
    fn key(&self) -> &str {
        match self {
            Entry::Object(o) => &o.key,
            Entry::Prefix(p) => p,
        }
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Entry>()
            + match self {
                Entry::Object(o) => o.key.len() + o.stored_key.len() + o.etag.len(),
                Entry::Prefix(p) => p.len(),
            }
    }
}

/// Which listing a page belongs to, and where it starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Resume {
    pub bucket: String,
    pub prefix: String,
    pub delimiter: Option<String>,
    /// The last key (or common prefix) given.
    pub after: String,
}

/// A whole listing, sorted by plaintext key.
pub(crate) struct Sorted {
    entries: Arc<[Entry]>,
    made: Instant,
    bytes: usize,
}

impl Sorted {
    /// Sorts a whole listing (a page of the store's listing with every entry).
    pub(crate) fn new(all: ListPage) -> Sorted {
        let mut entries: Vec<Entry> = all
            .objects
            .into_iter()
            .map(Entry::Object)
            .chain(all.common_prefixes.into_iter().map(Entry::Prefix))
            .collect();
        entries.sort_unstable_by(|a, b| a.key().cmp(b.key()));
        let bytes = entries.iter().map(Entry::bytes).sum();
        Sorted {
            entries: entries.into(),
            made: Instant::now(),
            bytes,
        }
    }

    /// The `max_keys` entries after `after` (from the start with `None`), and the key
    /// the next page starts after (the page's last) if more follow.
    pub(crate) fn page(&self, after: Option<&str>, max_keys: usize) -> (ListPage, Option<String>) {
        let start = after.map_or(0, |a| self.entries.partition_point(|e| e.key() <= a));
        let end = start.saturating_add(max_keys).min(self.entries.len());
        let mut page = ListPage::default();
        for entry in &self.entries[start..end] {
            match entry {
                Entry::Object(o) => page.objects.push(o.clone()),
                Entry::Prefix(p) => page.common_prefixes.push(p.clone()),
            }
        }
        let next = (end < self.entries.len() && end > start)
            .then(|| self.entries[end - 1].key().to_owned());
        (page, next)
    }
}

/// The sorted listings kept for their next page.
#[derive(Default)]
pub(crate) struct KeptListings {
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    by_resume: HashMap<Resume, Sorted>,
    bytes: usize,
}

impl KeptListings {
    /// The listing whose next page starts at `resume`, if it is still kept (taken out:
    /// [`keep`](Self::keep) it again under the page's last key).
    pub(crate) fn take(&self, resume: &Resume) -> Option<Sorted> {
        self.take_at(resume, Instant::now())
    }

    /// Keeps `sorted` for the page starting at `resume`, dropping expired listings and
    /// then the oldest ones while all together would pass [`KEPT_BYTES`].
    pub(crate) fn keep(&self, resume: Resume, sorted: Sorted) {
        self.keep_at(resume, sorted, KEPT_BYTES, Instant::now())
    }

    fn take_at(&self, resume: &Resume, now: Instant) -> Option<Sorted> {
        let mut kept = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let sorted = kept.by_resume.remove(resume)?;
        kept.bytes -= sorted.bytes;
        (now.duration_since(sorted.made) < KEPT_FOR).then_some(sorted)
    }

    fn keep_at(&self, resume: Resume, sorted: Sorted, limit: usize, now: Instant) {
        let live = |s: &Sorted| now.duration_since(s.made) < KEPT_FOR;
        if sorted.bytes > limit || !live(&sorted) {
            return;
        }
        let mut kept = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let kept = &mut *kept;
        kept.by_resume.retain(|_, s| {
            let keep = live(s);
            if !keep {
                kept.bytes -= s.bytes;
            }
            keep
        });
        while kept.bytes + sorted.bytes > limit {
            let oldest = kept
                .by_resume
                .iter()
                .min_by_key(|(_, s)| s.made)
                .map(|(r, _)| r.clone())
                .expect("bytes are counted for kept listings only");
            let gone = kept.by_resume.remove(&oldest).expect("just found");
            kept.bytes -= gone.bytes;
        }
        kept.bytes += sorted.bytes;
        if let Some(replaced) = kept.by_resume.insert(resume, sorted) {
            kept.bytes -= replaced.bytes;
        }
    }

    #[cfg(test)]
    fn count(&self) -> (usize, usize) {
        let kept = self.inner.lock().unwrap();
        (kept.by_resume.len(), kept.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str) -> ListedObject {
        ListedObject {
            key: key.into(),
            stored_key: format!("stored-{key}"),
            size: Some(1),
            stored_size: 1,
            etag: "\"e\"".into(),
            last_modified: None,
        }
    }

    fn listing(keys: &[&str], prefixes: &[&str]) -> Sorted {
        Sorted::new(ListPage {
            objects: keys.iter().map(|k| object(k)).collect(),
            common_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            ..ListPage::default()
        })
    }

    fn resume(after: &str) -> Resume {
        Resume {
            bucket: "b".into(),
            prefix: String::new(),
            delimiter: Some("/".into()),
            after: after.into(),
        }
    }

    fn keys(page: &ListPage) -> Vec<String> {
        let mut all: Vec<String> = page.objects.iter().map(|o| o.key.clone()).collect();
        all.extend(page.common_prefixes.iter().cloned());
        all.sort();
        all
    }

    #[test]
    fn pages_are_cut_in_key_order_across_objects_and_prefixes() {
        let sorted = listing(&["d", "a", "c/x"], &["b/", "c/"]);
        let (page, next) = sorted.page(None, 2);
        assert_eq!(keys(&page), ["a", "b/"]);
        assert_eq!(next.as_deref(), Some("b/"));
        let (page, next) = sorted.page(Some("b/"), 2);
        assert_eq!(keys(&page), ["c/", "c/x"]);
        assert_eq!(next.as_deref(), Some("c/x"));
        let (page, next) = sorted.page(Some("c/x"), 2);
        assert_eq!(keys(&page), ["d"]);
        assert_eq!(next, None);
        // A start key that is not an entry: the page starts after it all the same.
        let (page, _) = sorted.page(Some("bb"), 1);
        assert_eq!(keys(&page), ["c/"]);
        let (page, next) = sorted.page(Some("z"), 5);
        assert!(keys(&page).is_empty() && next.is_none());
        let (page, next) = sorted.page(None, 5);
        assert_eq!(keys(&page).len(), 5);
        assert_eq!(next, None, "exactly the whole listing: no next page");
    }

    #[test]
    fn a_kept_listing_is_found_once_by_where_its_next_page_starts() {
        let kept = KeptListings::default();
        kept.keep(resume("a"), listing(&["a", "b"], &[]));
        let other_prefix = Resume {
            prefix: "p/".into(),
            ..resume("a")
        };
        let other_delimiter = Resume {
            delimiter: None,
            ..resume("a")
        };
        assert!(kept.take(&other_prefix).is_none());
        assert!(kept.take(&other_delimiter).is_none());
        assert!(kept.take(&resume("b")).is_none());
        assert!(kept.take(&resume("a")).is_some());
        assert!(kept.take(&resume("a")).is_none(), "taken out");
        assert_eq!(kept.count(), (0, 0));
    }

    #[test]
    fn oldest_listings_go_first_when_memory_runs_out() {
        let kept = KeptListings::default();
        let now = Instant::now();
        let one = listing(&["a", "b"], &[]);
        let size = one.bytes;
        kept.keep_at(resume("1"), one, 2 * size, now);
        kept.keep_at(resume("2"), listing(&["c", "d"], &[]), 2 * size, now);
        assert_eq!(kept.count(), (2, 2 * size));
        kept.keep_at(resume("3"), listing(&["e", "f"], &[]), 2 * size, now);
        assert_eq!(kept.count(), (2, 2 * size));
        assert!(kept.take(&resume("1")).is_none(), "the oldest went");
        assert!(kept.take(&resume("3")).is_some());
        // Larger than the whole budget: not kept at all, and nothing else goes for it.
        kept.keep_at(
            resume("4"),
            listing(&["g", "h", "i", "j", "k"], &[]),
            2 * size,
            now,
        );
        assert!(kept.take(&resume("4")).is_none());
        assert!(kept.take(&resume("2")).is_some());
        assert_eq!(kept.count(), (0, 0));
    }

    #[test]
    fn listings_expire() {
        let kept = KeptListings::default();
        kept.keep(resume("a"), listing(&["a"], &[]));
        let later = Instant::now() + KEPT_FOR;
        assert!(kept.take_at(&resume("a"), later).is_none());
        assert_eq!(kept.count(), (0, 0));
        // An expired one is swept out when another is kept.
        kept.keep(resume("a"), listing(&["a"], &[]));
        let later = Instant::now() + KEPT_FOR;
        let mut fresh = listing(&["b"], &[]);
        fresh.made = later;
        kept.keep_at(resume("b"), fresh, KEPT_BYTES, later);
        assert_eq!(kept.count().0, 1);
        assert!(kept.take_at(&resume("b"), later).is_some());
    }
}
