//! Production disk: std files, fdatasync, fs2 preallocation and locks. (STUB)

use std::io;
use std::path::Path;

use super::{DirLock, Disk, DiskFile};

#[derive(Clone, Copy, Debug, Default)]
pub struct RealDisk;

impl Disk for RealDisk {
    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        todo!()
    }
    fn open(&self, _path: &Path, _create: bool) -> io::Result<Box<dyn DiskFile>> {
        todo!()
    }
    fn exists(&self, _path: &Path) -> bool {
        todo!()
    }
    fn list(&self, _dir: &Path) -> io::Result<Vec<String>> {
        todo!()
    }
    fn rename(&self, _from: &Path, _to: &Path) -> io::Result<()> {
        todo!()
    }
    fn remove_file(&self, _path: &Path) -> io::Result<()> {
        todo!()
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        todo!()
    }
    fn lock_dir(&self, _dir: &Path) -> io::Result<Box<dyn DirLock>> {
        todo!()
    }
}
