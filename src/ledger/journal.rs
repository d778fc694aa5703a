//! The reservation journal: every reservation appended to a file as it is made, so a crash
//! (kill -9) cannot hand out quota that was already used.
//!
//! Counters reach the database every two seconds; the journal covers the time in between. Each
//! reservation is one line appended with a plain `write` before the request is sent (a few
//! microseconds, no `fsync`: a killed process's writes are in the page cache and survive; a
//! power loss can lose the last seconds). Lines carry a sequence number. When the counters are
//! saved, the journal is rotated into `ledger.journal-<seq>`; once the save has committed, the
//! rotated files up to that sequence are deleted. At start, whatever is left is replayed on top
//! of the saved counters, skipping what they already hold.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::{Mark, Scope};

const FILE: &str = "ledger.journal";

/// One reservation as written.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// When it was made (the ledger's clock).
    pub at: i64,
    pub tokens: u64,
    /// Where it was counted, per scope.
    pub marks: Vec<JournalMark>,
}

/// One scope of a reservation as written: (encoded scope, minute, day, hour, month bucket).
/// Lines written before hour and month buckets existed hold the first three; those buckets
/// follow from the entry's time.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JournalMark {
    Full(String, i64, i64, i64, i64),
    Old(String, i64, i64),
}

impl Entry {
    /// The marks, decoded (scopes that do not decode are skipped).
    pub fn marks(&self) -> Vec<Mark> {
        self.marks
            .iter()
            .filter_map(|m| {
                let (scope, minute, day, hour, month) = match m {
                    JournalMark::Full(s, mi, d, h, mo) => (s, *mi, *d, *h, *mo),
                    JournalMark::Old(s, mi, d) => (
                        s,
                        *mi,
                        *d,
                        super::Span::HOUR.bucket_start(self.at),
                        super::Span::Month(chrono_tz::UTC).bucket_start(self.at),
                    ),
                };
                Some(Mark {
                    scope: Scope::decode(scope)?,
                    minute,
                    day,
                    hour,
                    month,
                })
            })
            .collect()
    }
}

/// The open journal.
pub struct Journal {
    dir: PathBuf,
    file: File,
    /// The last sequence number written.
    pub seq: u64,
}

fn open_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The journal files in `dir`, rotated ones first (by sequence), the live one last.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let seq = name.strip_prefix(FILE)?.strip_prefix('-')?.parse().ok()?;
            Some((seq, e.path()))
        })
        .collect();
    rotated.sort();
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    let live = dir.join(FILE);
    if live.exists() {
        out.push(live);
    }
    out
}

impl Journal {
    /// Read the entries left in `dir` after `saved` (the sequence the saved counters hold), and
    /// open the journal to continue after them.
    pub fn open(dir: &Path, saved: u64) -> std::io::Result<(Journal, Vec<Entry>)> {
        let mut entries = Vec::new();
        let mut seq = saved;
        for path in files(dir) {
            let Ok(f) = File::open(&path) else { continue };
            for line in std::io::BufReader::new(f).lines() {
                // A line cut short by the crash is skipped.
                let Ok(e) = line
                    .map_err(|_| ())
                    .and_then(|l| serde_json::from_str::<Entry>(&l).map_err(|_| ()))
                else {
                    continue;
                };
                seq = seq.max(e.seq);
                if e.seq > saved {
                    entries.push(e);
                }
            }
        }
        entries.sort_by_key(|e| e.seq);
        let file = open_private(&dir.join(FILE))?;
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                file,
                seq,
            },
            entries,
        ))
    }

    /// Append one reservation.
    pub fn append(&mut self, at: i64, tokens: u64, marks: &[Mark]) {
        self.seq += 1;
        let entry = Entry {
            seq: self.seq,
            at,
            tokens,
            marks: marks
                .iter()
                .map(|m| JournalMark::Full(m.scope.encode(), m.minute, m.day, m.hour, m.month))
                .collect(),
        };
        let Ok(mut line) = serde_json::to_vec(&entry) else {
            return;
        };
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            tracing::error!(error = %e, "could not write the ledger journal");
        }
    }

    /// Start a new file; the old one keeps the entries up to `self.seq` until the counters that
    /// hold them are saved.
    pub fn rotate(&mut self) {
        let live = self.dir.join(FILE);
        let rotated = self.dir.join(format!("{FILE}-{}", self.seq));
        if let Err(e) = std::fs::rename(&live, &rotated) {
            tracing::error!(error = %e, "could not rotate the ledger journal");
            return;
        }
        match open_private(&live) {
            Ok(f) => self.file = f,
            Err(e) => tracing::error!(error = %e, "could not reopen the ledger journal"),
        }
    }

    /// The counters holding everything up to `saved` are in the database: forget those files.
    pub fn saved(&self, saved: u64) {
        for path in files(&self.dir) {
            let seq = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(FILE)?.strip_prefix('-')?.parse::<u64>().ok());
            if seq.is_some_and(|s| s <= saved) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
