//! The data directory: created owner-only, and held by one `serve` at a time.
//!
//! Two processes on one SQLite file would each believe they own every claim (a SQLite
//! node releases all claims at start) and would send deliveries twice; two processes
//! sharing generated key files under different clocks would disagree about what is due.
//! So `serve` takes an exclusive lock on `refreshd.lock` for as long as it runs; the
//! operating system drops it when the process ends, however it ends, so a crash never
//! leaves a stale lock behind.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The lock file's name inside the data directory.
const LOCK_FILE: &str = "refreshd.lock";

/// A data directory this process holds. Dropping it releases the lock.
#[derive(Debug)]
pub struct DataDir {
    _lock: File,
}

impl DataDir {
    /// Creates `path` (mode 0700) if needed, narrows an existing directory to 0700, and
    /// takes the lock; when another process holds it, the error names that process.
    pub fn open(path: &Path, holder: &str) -> Result<DataDir> {
        create_owner_only(path)?;
        let lock = take_lock(
            &path.join(LOCK_FILE),
            &format!("the data directory {}", path.display()),
            holder,
        )?;
        Ok(DataDir { _lock: lock })
    }
}

/// The lock of a SQLite store kept outside the data directory (`--store PATH`): two
/// nodes with different data directories must not share one file either.
#[derive(Debug)]
pub struct StoreLock {
    _lock: File,
}

impl StoreLock {
    pub fn open(database: &Path, holder: &str) -> Result<StoreLock> {
        let mut lock_path = database.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = take_lock(
            Path::new(&lock_path),
            &format!("the store {}", database.display()),
            holder,
        )?;
        Ok(StoreLock { _lock: lock })
    }
}

/// Takes the exclusive lock on `lock_path` and writes who holds it; when another
/// process holds it, the error names `what` and that process.
fn take_lock(lock_path: &Path, what: &str, holder: &str) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut lock = options
        .open(lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut other = String::new();
            let _ = lock.read_to_string(&mut other);
            let other = other.trim();
            let other = if other.is_empty() {
                "another refreshd process"
            } else {
                other
            };
            bail!("{what} is in use by {other}; stop it first, or give this node its own --data-dir and store");
        }
        Err(TryLockError::Error(error)) => {
            return Err(error).with_context(|| format!("cannot lock {}", lock_path.display()))
        }
    }
    // Who holds it, for the error the next process will print.
    lock.set_len(0)?;
    lock.seek(SeekFrom::Start(0))?;
    writeln!(lock, "refreshd pid {} ({holder})", std::process::id())?;
    lock.sync_all()?;
    Ok(lock)
}

fn create_owner_only(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} owner-only", path.display()))?;
            tracing::warn!(path = %path.display(), "narrowed the data directory from {mode:o} to 700: it holds keys and users' data");
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("refreshd-dd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_named() {
        let path = temp("lock");
        let first = DataDir::open(&path, "listening on 127.0.0.1:1").unwrap();
        let error = DataDir::open(&path, "second").unwrap_err().to_string();
        assert!(error.contains("in use by refreshd pid"), "{error}");
        assert!(error.contains("127.0.0.1:1"), "{error}");
        drop(first);
        DataDir::open(&path, "third").expect("free again once the holder is gone");
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_is_owner_only_even_when_it_existed() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp("mode");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _dir = DataDir::open(&path, "test").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let lock = std::fs::metadata(path.join(LOCK_FILE)).unwrap();
        assert_eq!(lock.permissions().mode() & 0o777, 0o600);
    }
}
