//! Local files on their way from the writer through a local stage into a local warehouse:
//! placing a file without copying its bytes where the file system allows ([`place`]), and the
//! content hash that shows the bytes arrived unchanged ([`ContentHash`]).
//!
//! The rule of [`place`] is stated once here: a rename (or a hard link) when source and target
//! share a file system, a streamed copy when they do not (`EXDEV`) or when the file system
//! refuses links. Every hop of the local path uses it, so each byte is written once on the
//! usual single-disk setup.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The xxh3-64 hash and length of a file's bytes, computed by whoever wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentHash {
    /// Length in bytes.
    pub bytes: u64,
    /// xxh3-64 of the bytes.
    pub xxh3: u64,
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, xxh3 {:016x}", self.bytes, self.xxh3)
    }
}

/// Hashes bytes as they stream past.
#[derive(Clone, Default)]
pub struct ContentHasher {
    state: xxhash_rust::xxh3::Xxh3Default,
    bytes: u64,
}

impl ContentHasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.state.update(data);
        self.bytes += data.len() as u64;
    }

    /// The hash of everything added.
    pub fn finish(&self) -> ContentHash {
        ContentHash {
            bytes: self.bytes,
            xxh3: self.state.digest(),
        }
    }
}

/// A writer that hashes every byte it passes on, so a file's hash costs no second read.
pub struct HashingWriter<W> {
    inner: W,
    hasher: ContentHasher,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: ContentHasher::new(),
        }
    }

    /// The hash of everything written so far.
    pub fn hash(&self) -> ContentHash {
        self.hasher.finish()
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads `path` once and hashes it (blocking).
pub fn hash_file(path: &Path) -> Result<ContentHash> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = ContentHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// What [`place`] keeps at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The source goes away (a rename).
    Move,
    /// The source stays (a hard link): the file must survive a retry of the step.
    Link,
}

/// How [`place`] got the file there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Renamed or linked: no byte was written.
    InPlace,
    /// Copied, because the target is on another file system (or links are refused).
    Copied,
}

/// Puts the file at `from` at `to` without copying bytes where the file system allows: a
/// rename ([`Placement::Move`]) or a hard link ([`Placement::Link`]); across file systems, or
/// where links are refused, a copy into a temporary next to `to`, renamed into place, so `to`
/// never holds a partial file (and for a move, `from` is deleted afterwards). `to`'s directory
/// must exist; an existing `to` is replaced by a move and refused by a link. Blocking.
pub fn place(from: &Path, to: &Path, how: Placement) -> Result<Placed> {
    let tried = match how {
        Placement::Move => std::fs::rename(from, to),
        Placement::Link => std::fs::hard_link(from, to),
    };
    match tried {
        Ok(()) => return Ok(Placed::InPlace),
        Err(e) if !needs_copy(&e, how) => return Err(Error::io(from, e)),
        Err(_) => {}
    }
    copy_into_place(from, to)?;
    if how == Placement::Move {
        std::fs::remove_file(from).map_err(|e| Error::io(from, e))?;
    }
    Ok(Placed::Copied)
}

/// Whether a failed rename or link means "copy instead" rather than a real error.
fn needs_copy(e: &io::Error, how: Placement) -> bool {
    use io::ErrorKind::*;
    match (e.kind(), how) {
        (CrossesDevices, _) => true,
        // File systems without hard links (and protected_hardlinks) refuse them this way.
        (Unsupported | PermissionDenied, Placement::Link) => true,
        _ => false,
    }
}

fn copy_into_place(from: &Path, to: &Path) -> Result<()> {
    let tmp = copy_temp_path(to);
    let copied = (|| -> io::Result<()> {
        let mut src = File::open(from)?;
        let mut dst = File::create_new(&tmp)?;
        io::copy(&mut src, &mut dst)?;
        dst.sync_all()?;
        std::fs::rename(&tmp, to)
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(to, e));
    }
    Ok(())
}

/// A hidden temporary name next to `to` for a copy in progress.
fn copy_temp_path(to: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = to.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    to.with_file_name(format!(".{name}.copy-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashing_writer_hashes_what_a_read_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = HashingWriter::new(File::create(&path).unwrap());
        for i in 0..3000u32 {
            w.write_all(&i.to_le_bytes()).unwrap();
        }
        let written = w.hash();
        drop(w.into_inner());
        assert_eq!(written.bytes, 12_000);
        assert_eq!(hash_file(&path).unwrap(), written);
        std::fs::write(&path, b"other").unwrap();
        assert_ne!(hash_file(&path).unwrap(), written);
    }

    #[test]
    fn move_renames_and_link_keeps_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
        std::fs::write(&a, b"bytes").unwrap();
        assert_eq!(place(&a, &b, Placement::Move).unwrap(), Placed::InPlace);
        assert!(!a.exists());
        assert_eq!(place(&b, &c, Placement::Link).unwrap(), Placed::InPlace);
        assert_eq!(std::fs::read(&b).unwrap(), b"bytes");
        assert_eq!(std::fs::read(&c).unwrap(), b"bytes");
        let e = place(&b, &c, Placement::Link).unwrap_err();
        assert_eq!(e.kind(), "io", "a link never replaces: {e}");
        let e = place(&a, &c, Placement::Move).unwrap_err().to_string();
        assert!(e.contains(&a.display().to_string()), "names the missing source: {e}");
    }

    #[test]
    fn across_file_systems_the_file_is_copied() {
        // /dev/shm is a tmpfs on Linux; when the temporary directory is on another file
        // system the rename fails with EXDEV and `place` copies.
        let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let from = other.path().join("f");
        std::fs::write(&from, b"across").unwrap();
        let probe = dir.path().join("probe");
        std::fs::write(other.path().join("probe"), b"").unwrap();
        if std::fs::rename(other.path().join("probe"), &probe).is_ok() {
            return; // one file system here: nothing to show
        }
        let to = dir.path().join("moved");
        assert_eq!(place(&from, &to, Placement::Move).unwrap(), Placed::Copied);
        assert!(!from.exists());
        assert_eq!(std::fs::read(&to).unwrap(), b"across");
        std::fs::write(&from, b"again").unwrap();
        let linked = dir.path().join("linked");
        assert_eq!(place(&from, &linked, Placement::Link).unwrap(), Placed::Copied);
        assert!(from.exists(), "a link keeps its source, also as a copy");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".copy-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
