//! `rangedb admin backup create|restore`: runs src/backup/ and prints its progress
//! (stderr) and its summary (stdout).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use crate::backup::{self, BackupError, CreateOptions, Progress, Summary};
use crate::cli_table::print_table;
use crate::client::Client;

/// Takes a backup into `dir`, printing a progress line and a summary table.
///
/// # Errors
/// As `backup::create`.
pub async fn create(
    client: &Client,
    dir: &Path,
    hold: Duration,
    json: bool,
) -> Result<Summary, BackupError> {
    let terminal = std::io::stderr().is_terminal();
    let mut progress = |progress: &Progress| match progress {
        Progress::Captured { ranges, pause } => {
            eprintln!("backup: {ranges} ranges held and captured, writes paused {pause:.1?}");
        }
        Progress::Writing { index, ranges, range, bytes } => {
            let line = format!("backup: writing r{range} ({}/{ranges}): {bytes} bytes", index + 1);
            if terminal {
                eprint!("\r{line}   ");
                let _ = std::io::stderr().flush();
            } else {
                eprintln!("{line}");
            }
        }
    };
    let summary = backup::create(client, dir, &CreateOptions { hold }, &mut progress).await?;
    if terminal {
        eprintln!();
    }
    if json {
        let value = serde_json::json!({
            "dir": summary.dir.display().to_string(),
            "keys": summary.keys(),
            "bytes": summary.bytes(),
            "pause_ms": summary.pause.as_secs_f64() * 1e3,
            "duration_ms": summary.duration.as_secs_f64() * 1e3,
            "manifest": summary.manifest,
        });
        println!("{value}");
    } else {
        print_summary(&summary);
    }
    Ok(summary)
}

fn print_summary(summary: &Summary) {
    let manifest = &summary.manifest;
    let mut rows =
        vec![["range", "start", "end", "keys", "bytes", "freeze index"].map(String::from)];
    for range in &manifest.ranges {
        let span = |hex: &str| {
            let bytes = backup::files_decode_hex(hex).unwrap_or_default();
            format!("{:?}", String::from_utf8_lossy(&bytes))
        };
        rows.push([
            format!("r{}", range.id),
            span(&range.start),
            range.end.as_deref().map_or("(end)".into(), span),
            range.keys.to_string(),
            range.bytes.to_string(),
            range.freeze_index.to_string(),
        ]);
    }
    rows.push([
        format!("{} ranges", manifest.ranges.len()),
        String::new(),
        String::new(),
        summary.keys().to_string(),
        summary.bytes().to_string(),
        String::new(),
    ]);
    print_table(&rows);
    println!(
        "backup {} of cluster {} in {}: writes paused {:.1?}, took {:.1?}",
        manifest.backup,
        manifest.cluster,
        summary.dir.display(),
        summary.pause,
        summary.duration
    );
}

/// Checks the backup in `dir` and stages it in `data_dir`, saying what to run next.
///
/// # Errors
/// As `backup::stage`.
pub fn restore(dir: &Path, data_dir: &Path, json: bool) -> Result<(), BackupError> {
    let staged = backup::stage(dir, data_dir)?;
    let manifest = &staged.manifest;
    let keys: u64 = manifest.ranges.iter().map(|range| range.keys).sum();
    if json {
        let value = serde_json::json!({
            "staged": staged.dir.display().to_string(),
            "data_dir": data_dir.display().to_string(),
            "keys": keys,
            "manifest": manifest,
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "staged backup {} ({} ranges, {keys} keys) in {}",
        manifest.backup,
        manifest.ranges.len(),
        staged.dir.display()
    );
    println!(
        "start `rangedb server --data-dir {} --id ... --peers ...`: once every founder is \
         staged and started, they found a new cluster holding the backup",
        data_dir.display()
    );
    Ok(())
}
