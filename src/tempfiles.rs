//! Temp files that must not outlive an interrupted process.
//!
//! Plaintext is written to a temp file beside its destination and renamed into place only
//! once every byte authenticated. A process killed in between would leave that partial,
//! unauthenticated plaintext behind, so every such temp file is recorded in one
//! process-wide registry: a signal handler calls [`remove_all`] and exits while it holds
//! the guard. Creating a temp and renaming it into place happen under the same lock, so
//! an interrupted temp is either removed or fully persisted, never half of either.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    // The set stays consistent whatever panicked while holding it.
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A registered temp file: removed (file and registration) on drop unless persisted.
#[derive(Debug)]
pub struct LiveTemp {
    path: PathBuf,
}

impl LiveTemp {
    /// Runs `create`, which makes a temp file and returns it with its path, and registers
    /// that path before anyone can interrupt: the registry is locked throughout.
    pub fn create<F>(
        create: impl FnOnce() -> io::Result<(F, PathBuf)>,
    ) -> io::Result<(F, LiveTemp)> {
        let mut live = live();
        let (file, path) = create()?;
        live.insert(path.clone());
        Ok((file, LiveTemp { path }))
    }

    /// A new private (0600) file in `dir` named `prefix`, 16 random hex digits and
    /// `suffix`, created and registered as [`create`](Self::create) does.
    pub fn create_in(
        dir: &Path,
        prefix: &str,
        suffix: &str,
    ) -> io::Result<(std::fs::File, LiveTemp)> {
        LiveTemp::create(|| loop {
            let mut random = [0u8; 8];
            crate::random::fill(&mut random);
            let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
            let path = dir.join(format!("{prefix}{hex}{suffix}"));
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            match opts.open(&path) {
                Ok(file) => return Ok((file, path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        })
    }

    /// The temp file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temp file to `dest` under the registry lock. On failure the temp is
    /// still registered, and removed when `self` drops.
    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        let mut live = live();
        std::fs::rename(&self.path, dest)?;
        live.remove(&self.path);
        // Renamed: nothing left for drop to remove.
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for LiveTemp {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let mut live = live();
        let _ = std::fs::remove_file(&self.path);
        live.remove(&self.path);
    }
}

/// Holds the registry: while it lives no temp file is created or persisted.
#[derive(Debug)]
pub struct Held {
    _registry: MutexGuard<'static, BTreeSet<PathBuf>>,
}

/// Removes every registered temp file and returns the lock, for a signal handler to keep
/// while it exits (so no other thread persists or creates one meanwhile).
pub fn remove_all() -> Held {
    let mut live = live();
    for path in std::mem::take(&mut *live) {
        let _ = std::fs::remove_file(path);
    }
    Held { _registry: live }
}

/// Whether `path` is a registered temp file (for other modules' tests).
#[cfg(test)]
pub(crate) fn is_registered(path: &Path) -> bool {
    live().contains(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(path: &Path) -> io::Result<(std::fs::File, PathBuf)> {
        Ok((std::fs::File::create_new(path)?, path.to_owned()))
    }

    #[test]
    fn temps_are_persisted_dropped_or_removed_all_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );

        let (_file, temp) = LiveTemp::create(|| make(&a)).unwrap();
        temp.persist(&dir.path().join("a.final")).unwrap();
        assert!(dir.path().join("a.final").exists());
        assert!(!live().contains(&a));

        let (_file, temp) = LiveTemp::create(|| make(&b)).unwrap();
        drop(temp);
        assert!(!b.exists());
        assert!(!live().contains(&b));

        // What a signal handler does: every registered temp goes, persisted files stay.
        let (_file, registered) = LiveTemp::create(|| make(&c)).unwrap();
        drop(remove_all());
        assert!(!c.exists());
        assert!(dir.path().join("a.final").exists());
        drop(registered);
    }
}
