//! Production disk: std files, fdatasync, fs2 preallocation and locks.
//!
//! Every method maps one-to-one onto a std or fs2 call; the crash semantics are the
//! operating system's: `write_at` is durable after `sync` (fdatasync), and a created
//! or renamed file survives a crash after `sync_dir` on its directory (fsync of the
//! directory itself).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as UnixFileExt;
use std::path::Path;

use fs2::FileExt as Fs2FileExt;

use super::{DirLock, Disk, DiskFile};

/// The name of the lock file `lock_dir` creates inside the locked directory.
pub const LOCK_FILE: &str = "LOCK";

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealDisk;

/// An open std file.
struct RealFile {
    file: File,
}

impl DiskFile for RealFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        // Loop so that a short read only happens at end of file.
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn allocate(&mut self, len: u64) -> io::Result<()> {
        Fs2FileExt::allocate(&self.file, len)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

/// Holds the fs2 exclusive lock until dropped (closing the file releases it).
struct RealDirLock {
    _file: File,
}

impl DirLock for RealDirLock {}

impl Disk for RealDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let file = OpenOptions::new().read(true).write(true).create(create).open(path)?;
        Ok(Box::new(RealFile { file }))
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // Names that are not UTF-8 were not written by rangedb; skip them.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let path = dir.join(LOCK_FILE);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        match file.try_lock_exclusive() {
            Ok(()) => Ok(Box::new(RealDirLock { _file: file })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            // fs2 reports contention as its own error on some platforms.
            Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
                Err(io::Error::new(io::ErrorKind::WouldBlock, e))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_sync_read_allocate() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk;
        let path = dir.path().join("f");
        assert!(!disk.exists(&path));
        let mut file = disk.open(&path, true).unwrap();
        file.allocate(4096).unwrap();
        assert!(file.len().unwrap() >= 4096);
        file.write_at(10, b"hello").unwrap();
        file.sync().unwrap();
        drop(file);
        let file = disk.open(&path, false).unwrap();
        let mut buf = [0u8; 7];
        assert_eq!(file.read_at(9, &mut buf).unwrap(), 7);
        assert_eq!(&buf, b"\0hello\0");
        assert!(disk.exists(&path));
        disk.sync_dir(dir.path()).unwrap();
    }

    #[test]
    fn set_len_list_rename_remove() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk;
        let mut file = disk.open(&dir.path().join("b"), true).unwrap();
        file.set_len(100).unwrap();
        assert_eq!(file.len().unwrap(), 100);
        disk.open(&dir.path().join("a"), true).unwrap();
        assert_eq!(disk.list(dir.path()).unwrap(), vec!["a".to_string(), "b".to_string()]);
        disk.rename(&dir.path().join("a"), &dir.path().join("c")).unwrap();
        disk.remove_file(&dir.path().join("b")).unwrap();
        assert_eq!(disk.list(dir.path()).unwrap(), vec!["c".to_string()]);
        assert!(disk.open(&dir.path().join("missing"), false).is_err());
    }

    #[test]
    fn lock_contention_is_would_block() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk;
        let lock = disk.lock_dir(dir.path()).unwrap();
        let err = disk.lock_dir(dir.path()).err().expect("second lock must fail");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(lock);
        disk.lock_dir(dir.path()).expect("lock is free again after drop");
    }
}
