//! A file-system wrapper for tests (feature `fs`): every operation goes through to the
//! wrapped [`Fs`], and each crash-point announcement first reaches a [`Hook`] of the test's,
//! which can count it, record it, park the thread, kill the process or fail it.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! use ingestor_fs::{Fs, SimFs};
//! use ingestor_testkit::fs::{Hook, HookFs};
//!
//! #[derive(Debug, Default)]
//! struct Count(AtomicU64);
//!
//! impl Hook for Count {
//!     fn crash_point(&self, _name: &'static str) -> std::io::Result<()> {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         Ok(())
//!     }
//! }
//!
//! let fs = Arc::new(HookFs::new(Arc::new(SimFs::new(1)), Count::default()));
//! fs.crash_point("test.step").unwrap();
//! assert_eq!(fs.0.load(Ordering::Relaxed), 1); // the hook, through `Deref`
//! ```

use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use ingestor_fs::{DirEntry, Fs, FsFile, FsLock, OpenMode};

/// What a test does when the engine announces a crash point.
pub trait Hook: Send + Sync + fmt::Debug {
    /// Called at each announcement, before the wrapped file system hears of it. An error
    /// is returned to the engine as the announcement's, without the wrapped file system
    /// hearing of it.
    fn crash_point(&self, name: &'static str) -> io::Result<()>;
}

/// A file system passing every operation to `inner`, and each crash-point announcement to
/// its hook first. It reports no space ([`Fs::space`]'s default, `None`), so that a test
/// never meets a free-space floor of the real disk it runs on. Dereferences to the hook, so
/// that a test reads the hook's state through the file system it shares with the engine.
#[derive(Debug)]
pub struct HookFs<H> {
    inner: Arc<dyn Fs>,
    hook: H,
}

impl<H: Hook> HookFs<H> {
    /// Wraps `inner`, announcing crash points to `hook`.
    pub fn new(inner: Arc<dyn Fs>, hook: H) -> HookFs<H> {
        HookFs { inner, hook }
    }

    /// The wrapped file system.
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn Fs> {
        &self.inner
    }
}

impl<H> Deref for HookFs<H> {
    type Target = H;

    fn deref(&self) -> &H {
        &self.hook
    }
}

impl<H: Hook> Fs for HookFs<H> {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.inner.create(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        self.inner.open(path, mode)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        self.inner.read_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }

    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn FsLock>> {
        self.inner.lock_dir(path)
    }

    fn crash_point(&self, name: &'static str) -> io::Result<()> {
        self.hook.crash_point(name)?;
        self.inner.crash_point(name)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ingestor_fs::SimFs;

    use super::*;

    #[derive(Debug, Default)]
    struct Refuse(Mutex<Vec<&'static str>>);

    impl Hook for Refuse {
        fn crash_point(&self, name: &'static str) -> io::Result<()> {
            self.0.lock().unwrap().push(name);
            if name == "no" { Err(io::Error::other("refused")) } else { Ok(()) }
        }
    }

    #[test]
    fn operations_go_through_and_the_hook_hears_each_announcement_first() {
        let sim = SimFs::new(1);
        sim.arm_crash_point("b", 1);
        let fs = HookFs::new(Arc::new(sim.clone()), Refuse::default());
        fs.create_dir_all(Path::new("/d")).unwrap();
        fs.create(Path::new("/d/f")).unwrap().write_at(b"x", 0).unwrap();
        assert_eq!(fs.read_file(Path::new("/d/f")).unwrap(), b"x");
        assert!(sim.exists(Path::new("/d/f")).unwrap());
        fs.crash_point("a").unwrap();
        assert!(fs.crash_point("no").is_err());
        assert!(fs.crash_point("b").is_err(), "the simulated disk's armed crash");
        assert!(sim.is_crashed());
        assert_eq!(*fs.0.lock().unwrap(), ["a", "no", "b"]);
        assert_eq!(fs.space(Path::new("/d")).unwrap(), None);
    }
}
