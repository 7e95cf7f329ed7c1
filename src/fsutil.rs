//! Atomic file output (write to a temporary file beside the target, then rename) and lock
//! files shared by processes.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes a file atomically: readers see either the old file or the complete new one.
///
/// Parent folders are created. `fill` writes the content into a buffered writer.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        fill(&mut w)?;
        w.flush()?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// An exclusive advisory lock (`flock`) on a lock file, held until dropped. Processes on
/// other machines see it too where the shared file system supports locks (NFSv4, Lustre,
/// CephFS). The kernel releases it when the holder dies, even by SIGKILL.
#[derive(Debug)]
pub struct FileLock {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl FileLock {
    /// Waits for the lock on `path` (created with its parent folders if missing). A lock file
    /// that its holder removed while this process waited is opened again, so
    /// [`remove`](FileLock::remove) never lets two processes hold "the" lock at once.
    pub fn acquire(path: &Path) -> Result<FileLock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            file.lock().map_err(|e| Error::io(path, e))?;
            if same_file(&file, path) {
                return Ok(FileLock {
                    file,
                    path: path.to_path_buf(),
                });
            }
        }
    }

    /// Whether another process holds the lock on `path` (a missing file is not held). Takes
    /// and releases the lock at once when it is free; creates nothing.
    pub fn is_held(path: &Path) -> Result<bool> {
        let file = match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(path, e)),
        };
        match file.try_lock() {
            Ok(()) => Ok(false),
            Err(std::fs::TryLockError::WouldBlock) => Ok(true),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
        }
    }

    /// Deletes the lock file, then releases the lock.
    pub fn remove(self) -> Result<()> {
        std::fs::remove_file(&self.path).map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file releases the lock as well; this only makes it explicit.
        let _ = self.file.unlock();
    }
}

/// Whether the open `file` is still the file at `path`.
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b/out.txt");
        write_atomic(&target, b"hello").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
        let failed = write_atomic_with(&target, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(failed.is_err());
        // The old content survives and no temporary file is left behind.
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
        let names: Vec<_> = std::fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.txt")]);
    }

    #[test]
    fn a_lock_excludes_others_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.lock");
        assert!(!FileLock::is_held(&path).unwrap());
        let lock = FileLock::acquire(&path).unwrap();
        assert!(FileLock::is_held(&path).unwrap());
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let l = FileLock::acquire(&path).unwrap();
                // The waiter got a lock on the file that is at the path now.
                assert!(same_file(&l.file, &path));
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "the second lock waits");
        lock.remove().unwrap();
        waiter.join().unwrap();
        assert!(!FileLock::is_held(&path).unwrap());
    }
}
