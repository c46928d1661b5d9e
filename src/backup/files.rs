//! The backup directory's files: the manifest (JSON) and one image file per range.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backup::BackupError;

/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST";
/// The version of the manifest and of the image files this rangedb writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's `format` field.
const FORMAT_NAME: &str = "rangedb-backup";
const IMAGE_MAGIC: &[u8; 8] = b"RDBBKUP1";
const IMAGE_HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 4;

/// What a backup holds (DIR/MANIFEST).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always "rangedb-backup".
    pub format: String,
    pub version: u32,
    /// The backup's id (16 hex digits), the one its freezes carried.
    pub backup: String,
    /// The backed-up cluster's id (16 hex digits).
    pub cluster: String,
    /// When the ranges were held, wall-clock ms since the epoch.
    pub created_ms: u64,
    /// How long writes were held, ms (first freeze sent to last unfreeze answered).
    pub pause_ms: u64,
    /// Sorted by start; they tile the keyspace.
    pub ranges: Vec<RangeEntry>,
}

/// One range of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeEntry {
    pub id: u64,
    /// The span [start, end) in hex (end None: the end of the keyspace).
    pub start: String,
    pub end: Option<String>,
    pub file: String,
    /// The file's size and the crc32 of all of it.
    pub bytes: u64,
    pub crc32: u32,
    /// The index of the range's freeze entry: the backup's point in its log.
    pub freeze_index: u64,
    /// The image's applied index (>= freeze_index: only no-ops follow the freeze).
    pub applied: u64,
    pub keys: u64,
}

impl Manifest {
    pub fn new(backup: u64, cluster: u64, created_ms: u64, pause_ms: u64) -> Manifest {
        Manifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            backup: format!("{backup:016x}"),
            cluster: format!("{cluster:016x}"),
            created_ms,
            pause_ms,
            ranges: Vec::new(),
        }
    }

    /// The backup id as a number.
    pub fn backup_id(&self) -> u64 {
        u64::from_str_radix(&self.backup, 16).unwrap_or(0)
    }

    /// Reads and checks `dir`'s manifest (not the range files).
    ///
    /// # Errors
    /// `Damaged` naming the manifest when it is missing, not JSON, of another format
    /// or version, or its ranges do not tile the keyspace.
    pub fn read(dir: &Path) -> Result<Manifest, BackupError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read(&path).map_err(|error| {
            BackupError::damaged(&path, format!("cannot read the manifest: {error}"))
        })?;
        let manifest: Manifest = serde_json::from_slice(&text).map_err(|error| {
            BackupError::damaged(&path, format!("not a backup manifest: {error}"))
        })?;
        if manifest.format != FORMAT_NAME {
            let reason = format!("format {:?}, not {FORMAT_NAME:?}", manifest.format);
            return Err(BackupError::damaged(&path, reason));
        }
        if manifest.version != FORMAT_VERSION {
            let reason = format!(
                "backup format version {}; this rangedb reads version {FORMAT_VERSION}",
                manifest.version
            );
            return Err(BackupError::damaged(&path, reason));
        }
        if u64::from_str_radix(&manifest.backup, 16).is_err() || manifest.ranges.is_empty() {
            return Err(BackupError::damaged(&path, "no backup id or no ranges"));
        }
        let mut expected_start = Some(String::new());
        for entry in &manifest.ranges {
            if expected_start.as_ref() != Some(&entry.start) || decode_hex(&entry.start).is_none() {
                let reason = format!("range {} does not start where the one before ends", entry.id);
                return Err(BackupError::damaged(&path, reason));
            }
            if entry.file.contains(['/', '\\']) || entry.file == ".." {
                return Err(BackupError::damaged(&path, format!("bad file name {:?}", entry.file)));
            }
            expected_start = entry.end.clone();
        }
        if expected_start.is_some() {
            return Err(BackupError::damaged(&path, "the ranges stop before the keyspace's end"));
        }
        Ok(manifest)
    }

    /// Writes the manifest (a temporary file, its fsync, a rename, the directory's).
    ///
    /// # Errors
    /// The writes failed.
    pub fn write(&self, dir: &Path) -> Result<(), BackupError> {
        let text = serde_json::to_vec_pretty(self)
            .map_err(|error| BackupError::Refused(format!("manifest: {error}")))?;
        write_durably(dir, MANIFEST, &text)
    }

    /// The split keys that give a new cluster these ranges.
    pub fn split_keys(&self) -> Vec<Vec<u8>> {
        let starts = self.ranges.iter().skip(1).filter_map(|entry| decode_hex(&entry.start));
        // The meta range's bounds are added by every cluster itself.
        let reserved = crate::range::descriptor::RESERVED_PREFIX;
        starts.filter(|start| !start.starts_with(reserved)).collect()
    }
}

/// The file name of a range's image.
pub fn image_file_name(range: u64) -> String {
    format!("range-{range:016x}.img")
}

/// A range's image file: header, then the image.
pub fn encode_image(range: u64, image: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(IMAGE_HEADER_BYTES + image.len());
    file.extend_from_slice(IMAGE_MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&range.to_le_bytes());
    file.extend_from_slice(&(image.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32fast::hash(image).to_le_bytes());
    file.extend_from_slice(image);
    file
}

/// The image in a range's file, checked against `entry`.
///
/// # Errors
/// `Damaged` naming the file.
pub fn read_image(dir: &Path, entry: &RangeEntry) -> Result<Vec<u8>, BackupError> {
    let path = dir.join(&entry.file);
    let file = std::fs::read(&path)
        .map_err(|error| BackupError::damaged(&path, format!("cannot read it: {error}")))?;
    let damaged = |reason: String| BackupError::damaged(&path, reason);
    if file.len() as u64 != entry.bytes {
        return Err(damaged(format!("{} bytes, the manifest says {}", file.len(), entry.bytes)));
    }
    let crc = crc32fast::hash(&file);
    if crc != entry.crc32 {
        return Err(damaged(format!(
            "checksum {crc:#010x}, the manifest says {:#010x}",
            entry.crc32
        )));
    }
    if file.len() < IMAGE_HEADER_BYTES || &file[..8] != IMAGE_MAGIC {
        return Err(damaged("not a rangedb backup image".into()));
    }
    let word = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(file[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(damaged(format!(
            "image version {version}; this rangedb reads {FORMAT_VERSION}"
        )));
    }
    if word(12) != entry.id {
        return Err(damaged(format!("holds range {}, the manifest says {}", word(12), entry.id)));
    }
    let image = &file[IMAGE_HEADER_BYTES..];
    let image_crc = u32::from_le_bytes(file[28..32].try_into().expect("4 bytes"));
    if word(20) != image.len() as u64 || crc32fast::hash(image) != image_crc {
        return Err(damaged("the image's length or checksum does not match its header".into()));
    }
    Ok(image.to_vec())
}

/// Writes `dir/name` durably: a temporary file, fsync, rename, directory fsync.
///
/// # Errors
/// Any of those failed.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), BackupError> {
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary).map_err(BackupError::io(&temporary))?;
    file.write_all(bytes).map_err(BackupError::io(&temporary))?;
    file.sync_all().map_err(BackupError::io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(BackupError::io(&path))?;
    sync_dir(dir)
}

/// Fsyncs a directory (its entries).
///
/// # Errors
/// The open or the sync failed.
pub fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    let handle = std::fs::File::open(dir).map_err(BackupError::io(dir))?;
    handle.sync_all().map_err(BackupError::io(dir))
}

pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_odd_text() {
        assert_eq!(decode_hex(&encode_hex(b"_/\x00\xff")), Some(b"_/\x00\xff".to_vec()));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    #[test]
    fn an_image_file_is_refused_on_any_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let file = encode_image(3, b"image bytes");
        let entry = RangeEntry {
            id: 3,
            start: String::new(),
            end: None,
            file: image_file_name(3),
            bytes: file.len() as u64,
            crc32: crc32fast::hash(&file),
            freeze_index: 1,
            applied: 1,
            keys: 0,
        };
        std::fs::write(dir.path().join(&entry.file), &file).unwrap();
        assert_eq!(read_image(dir.path(), &entry).unwrap(), b"image bytes");
        for at in 0..file.len() {
            let mut flipped = file.clone();
            flipped[at] ^= 0x10;
            std::fs::write(dir.path().join(&entry.file), &flipped).unwrap();
            let error = read_image(dir.path(), &entry).unwrap_err().to_string();
            assert!(error.contains("range-0000000000000003.img"), "{error}");
        }
    }
}
