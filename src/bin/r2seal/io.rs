//! Files, streams, passphrases and keyrings for the CLI: the only module that
//! touches the filesystem on behalf of the commands.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use r2seal::keys::files::{parse_identity_file, parse_recipients_file};
use r2seal::keys::keyring::Keyring;
use r2seal::keys::passphrase::{self, Argon2Params, Passphrase};
use r2seal::keys::{Identity, Recipient};
use r2seal::tempfiles::LiveTemp;

/// Read size for streaming: 16 chunks. Small enough that a buffer stays in cache
/// between the read, the copy and the cipher (4 MiB measured slower: bench/format.sh),
/// large enough to keep the read-ahead thread and the sealer both busy.
pub const IO_BUFFER: usize = 1024 * 1024;

/// Prints one line to stdout. Every line of output goes through here, never `println!`,
/// which panics on a closed pipe: the error is returned as a broken pipe, and main exits
/// 0 on it (`r2seal key list | head -1`).
pub fn print_line(line: impl std::fmt::Display) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    Ok(())
}

pub fn open_input(path: Option<&Path>) -> Result<Box<dyn Read + Send>> {
    match path {
        None => Ok(Box::new(io::stdin())),
        Some(p) if p.as_os_str() == "-" => Ok(Box::new(io::stdin())),
        Some(p) => Ok(Box::new(
            File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
    }
}

pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read stdin")?;
        return Ok(buf);
    }
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Fills `buf` as far as the reader allows; returns bytes read (short only at EOF).
pub fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads on a thread of its own, one `IO_BUFFER` ahead, so the next read overlaps
/// sealing or opening the current buffer. Buffers are recycled: memory stays at two
/// buffers whatever the input size.
pub struct ReadAhead {
    filled: mpsc::Receiver<io::Result<Vec<u8>>>,
    empty: mpsc::SyncSender<Vec<u8>>,
    done: bool,
}

impl ReadAhead {
    pub fn new(mut reader: Box<dyn Read + Send>) -> ReadAhead {
        let (filled_tx, filled) = mpsc::sync_channel(1);
        let (empty, empty_rx) = mpsc::sync_channel::<Vec<u8>>(2);
        for _ in 0..2 {
            empty
                .send(vec![0u8; IO_BUFFER])
                .expect("room for two buffers");
        }
        std::thread::spawn(move || {
            while let Ok(mut buf) = empty_rx.recv() {
                buf.resize(IO_BUFFER, 0);
                match read_full(&mut reader, &mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        // A short read is the end; a closed receiver means nobody listens.
                        if filled_tx.send(Ok(buf)).is_err() || n < IO_BUFFER {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = filled_tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        ReadAhead {
            filled,
            empty,
            done: false,
        }
    }

    /// The next buffer of input, or `None` at the end.
    pub fn next_buffer(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        match self.filled.recv() {
            Ok(Ok(buf)) => {
                self.done = buf.len() < IO_BUFFER;
                Ok(Some(buf))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Hands a buffer back for the reader to fill again.
    pub fn recycle(&self, buf: Vec<u8>) {
        let _ = self.empty.try_send(buf);
    }
}

/// Where output goes. A regular file (new or existing) appears only on commit: it is
/// written to a 0600 temporary file beside the target and renamed into place, and
/// dropped without `commit` the temporary file is removed and the target untouched.
/// The temporary file is registered with [`r2seal::tempfiles`], so Ctrl-C or SIGTERM
/// removes it too (see `remove_temps_on_signal` in main.rs).
/// Anything else that exists (a device such as /dev/null, a FIFO) is written in
/// place, like stdout: renaming over it would replace the device itself.
pub enum Output {
    Stdout(io::StdoutLock<'static>),
    Special {
        file: File,
        path: PathBuf,
    },
    File {
        file: File,
        tmp: LiveTemp,
        dest: PathBuf,
    },
}

impl Output {
    pub fn new(path: Option<&Path>) -> Result<Output> {
        let path = match path {
            None => return Ok(Output::Stdout(io::stdout().lock())),
            Some(p) if p.as_os_str() == "-" => return Ok(Output::Stdout(io::stdout().lock())),
            Some(p) => p,
        };
        // Follow a symlink to its target so the rename replaces the file, not the link.
        let dest = match fs::metadata(path) {
            Ok(meta) if !meta.is_file() => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                return Ok(Output::Special {
                    file,
                    path: path.to_owned(),
                });
            }
            Ok(_) => fs::canonicalize(path)
                .with_context(|| format!("cannot resolve {}", path.display()))?,
            // A dangling symlink: following it would create a file wherever it points
            // (perhaps outside the directory the user looked at); replacing it would drop
            // the link. Neither is clearly what was asked, so refuse.
            Err(_) if fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink()) => {
                bail!(
                    "cannot write {}: it is a symlink to a file that does not exist",
                    path.display()
                )
            }
            Err(_) => path.to_owned(),
        };
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let (file, tmp) = LiveTemp::create_in(&dir, ".r2seal-", ".partial")
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Output::File { file, tmp, dest })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout(s) => s.write_all(bytes),
            Output::Special { file, path } => {
                file.write_all(bytes).map_err(|e| cannot_write(path, e))
            }
            Output::File { file, dest, .. } => {
                file.write_all(bytes).map_err(|e| cannot_write(dest, e))
            }
        }
    }

    /// Makes the output visible: flush stdout, or fsync and rename the file.
    pub fn commit(self) -> Result<()> {
        match self {
            Output::Stdout(mut s) => s.flush().map_err(anyhow::Error::from),
            Output::Special { mut file, path } => file
                .flush()
                .with_context(|| format!("cannot write {}", path.display())),
            Output::File { file, tmp, dest } => {
                file.sync_all()
                    .with_context(|| format!("cannot write {}", dest.display()))?;
                drop(file);
                tmp.persist(&dest)
                    .with_context(|| format!("cannot write {}", dest.display()))
            }
        }
    }
}

/// Names the file in a write error; the kind stays, so a broken pipe is still one.
fn cannot_write(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
}

/// Writes a new secret file: created 0600, never overwriting an existing one.
pub fn write_new_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| match path.exists() {
            true => format!(
                "{} already exists; refusing to overwrite a key file",
                path.display()
            ),
            false => format!("cannot create {}", path.display()),
        })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Replaces a secret file atomically, keeping it 0600.
pub fn replace_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    // Output's temp file is created 0600, and the rename keeps its mode.
    let mut out = Output::new(Some(path))?;
    out.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    out.commit()
}

/// `R2SEAL_PASSPHRASE`, taken out of the environment by [`take_env_passphrase`].
static ENV_PASSPHRASE: std::sync::OnceLock<Option<Passphrase>> = std::sync::OnceLock::new();

/// Moves `R2SEAL_PASSPHRASE` out of the environment, so that no process this one starts
/// (an AWS `credential_process`, say) inherits the passphrase. Called first in `main`,
/// while the process has one thread (changing the environment is not thread-safe).
/// `/proc/PID/environ` still shows the environment the process started with, to the same
/// user: SECURITY.md §6.
pub fn take_env_passphrase() {
    // A value that is not UTF-8 counts as unset (the prompt asks), as it always has.
    let taken = std::env::var_os("R2SEAL_PASSPHRASE").and_then(|v| {
        std::env::remove_var("R2SEAL_PASSPHRASE");
        v.into_string().ok().map(Passphrase::new)
    });
    let _ = ENV_PASSPHRASE.set(taken);
}

/// The passphrase for `file` (its name is in the prompt): `R2SEAL_PASSPHRASE`, else a
/// prompt on the terminal (twice when setting a new one).
pub fn ask_passphrase(file: &Path, confirm: bool) -> r2seal::Result<Passphrase> {
    // Every copy is a `Passphrase` as soon as it is read, so each one, the confirmation
    // and a mismatched first try included, is wiped when dropped.
    if let Some(p) = ENV_PASSPHRASE.get().and_then(Option::as_ref) {
        if p.expose().is_empty() {
            return Err(r2seal::Error::EmptyPassphrase { from_env: true });
        }
        return Ok(Passphrase::new(p.expose().to_owned()));
    }
    let shown = file
        .file_name()
        .unwrap_or(file.as_os_str())
        .to_string_lossy();
    let prompt = |label: &str| {
        rpassword::prompt_password(format!("{label} for {shown}: "))
            .map(Passphrase::new)
            .map_err(|_| r2seal::Error::PassphraseUnavailable)
    };
    let first = prompt("Passphrase")?;
    if first.expose().is_empty() {
        return Err(r2seal::Error::EmptyPassphrase { from_env: false });
    }
    if confirm && prompt("Confirm passphrase")?.expose() != first.expose() {
        return Err(r2seal::Error::PassphrasesDiffer);
    }
    Ok(first)
}

pub fn load_identity_files(paths: &[PathBuf]) -> Result<Vec<Identity>> {
    let mut all = Vec::new();
    for p in paths {
        let bytes = zeroize::Zeroizing::new(read_file(p)?);
        let ids = parse_identity_file(&bytes, &mut || ask_passphrase(p, false))
            .with_context(|| format!("identity file {}", p.display()))?;
        all.extend(ids);
    }
    Ok(all)
}

pub fn load_recipient_files(paths: &[PathBuf]) -> Result<Vec<Recipient>> {
    let mut all = Vec::new();
    for p in paths {
        let bytes = read_file(p)?;
        let text =
            std::str::from_utf8(&bytes).with_context(|| format!("{} is not text", p.display()))?;
        all.extend(
            parse_recipients_file(text)
                .with_context(|| format!("recipients file {}", p.display()))?,
        );
    }
    Ok(all)
}

/// A keyring as loaded, remembering its passphrase so saving keeps it protected.
pub struct LoadedKeyring {
    pub ring: Keyring,
    pub path: PathBuf,
    passphrase: Option<Passphrase>,
}

impl LoadedKeyring {
    pub fn load(path: &Path) -> Result<LoadedKeyring> {
        let bytes = zeroize::Zeroizing::new(
            fs::read(path).with_context(|| format!("cannot read keyring {}", path.display()))?,
        );
        let mut passphrase = None;
        let ring = Keyring::parse(&bytes, &mut || {
            let p = ask_passphrase(path, false)?;
            passphrase = Some(Passphrase::new(p.expose().to_owned()));
            Ok(p)
        })
        .with_context(|| format!("keyring {}", path.display()))?;
        Ok(LoadedKeyring {
            ring,
            path: path.to_owned(),
            passphrase,
        })
    }

    /// Loads `path`, or starts an empty keyring there (protected if asked).
    pub fn load_or_create(path: &Path, protect: bool) -> Result<LoadedKeyring> {
        if path.exists() {
            if protect {
                bail!(
                    "--passphrase applies to a new keyring; {} already exists",
                    path.display()
                );
            }
            return LoadedKeyring::load(path);
        }
        let passphrase = if protect {
            Some(ask_passphrase(path, true)?)
        } else {
            None
        };
        Ok(LoadedKeyring {
            ring: Keyring::default(),
            path: path.to_owned(),
            passphrase,
        })
    }

    pub fn save(&self) -> Result<()> {
        let text = self.ring.to_toml();
        let bytes = match &self.passphrase {
            Some(p) => zeroize::Zeroizing::new(passphrase::protect(
                text.as_bytes(),
                p,
                Argon2Params::DEFAULT,
            )?),
            None => zeroize::Zeroizing::new(text.as_bytes().to_vec()),
        };
        replace_secret_file(&self.path, &bytes)
    }
}

pub fn require_keyring(path: &Option<PathBuf>) -> Result<&Path> {
    match path {
        Some(p) => Ok(p),
        None => bail!("no keyring: pass --keyring FILE or set R2SEAL_KEYRING"),
    }
}
