//! The embedded store's dedupe window: every `(recipient, messageId)` enqueued within
//! `DEDUPE_WINDOW`, in memory, persisted as append-only files beside the database.
//!
//! An entry is only ever added, then forgotten when its window ends, so it needs no B-tree:
//! entries live in time buckets by the end of their window (one map and one file each), and
//! a bucket whose end has passed is dropped whole, file and all. An entry is 16 bytes of keyed
//! hash of recipient and id plus its window end (about 30 bytes of memory). Records written
//! since the last commit are cut with the envelopes that commit writes (see `Staging`), and
//! appended and synced after the database commits them, before their enqueues hear they are
//! durable; a crash before that sync loses them, and the unacked bus message then enqueues
//! the envelope again (an id already queued is replaced, not doubled). Entries added after
//! the cut wait for the next commit.
//!
//! File record: `key: [u8; 16]`, `window end ms: u64 LE`, `crc32: u32 LE` of the first 24
//! bytes. A torn record (a crash mid-write) fails its checksum; the file is cut there.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};

/// Bytes of one file record.
const RECORD: usize = 28;

/// Buckets a window is split into: memory holds at most a window and one bucket's span.
const BUCKETS_PER_WINDOW: u64 = 16;

/// The file holding the hash key (random, made once per data folder).
const KEY_FILE: &str = "key";

/// A keyed hash of recipient and id (the key is secret, so ids cannot be chosen to collide).
type EntryKey = u128;

/// Hashes an [`EntryKey`] by taking its low bits: it already is a uniform hash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// Window ends by entry key, for the entries of one bucket.
type Bucket = HashMap<EntryKey, u64, BuildHasherDefault<KeyHasher>>;

/// One entry added since the last commit: its bucket, key and what it replaced there.
struct Unsynced {
    bucket: u64,
    key: EntryKey,
    until: u64,
    replaced: Option<u64>,
}

/// The dedupe index and its files. Enqueues add entries on their callers' tasks; the
/// database's writer thread cuts, syncs and undoes them around its commits.
pub(super) struct DedupeLog(Mutex<State>);

struct State {
    dir: PathBuf,
    secret: [u8; 32],
    span_ms: u64,
    /// In memory, by the end of each bucket's span (every entry in it ends before that).
    buckets: BTreeMap<u64, Bucket>,
    /// Open files, by the end of their bucket's span.
    files: BTreeMap<u64, File>,
    /// Entries added since the last cut, for the next commit.
    unsynced: Vec<Unsynced>,
    /// Entries cut for the commit in progress, written and synced after it.
    cut: Vec<Unsynced>,
}

/// Why the dedupe files could not be read or written.
fn io_error(context: &str, path: &Path, err: &std::io::Error) -> String {
    format!("dedupe log: {context} {}: {err}", path.display())
}

fn file_name(bucket_end: u64) -> String {
    format!("{bucket_end:020}.log")
}

fn encode(key: EntryKey, until: u64) -> [u8; RECORD] {
    let mut out = [0; RECORD];
    out[..16].copy_from_slice(&key.to_le_bytes());
    out[16..24].copy_from_slice(&until.to_le_bytes());
    let crc = crc32fast::hash(&out[..24]);
    out[24..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The whole records at the start of `bytes` (up to the first torn one).
fn decode_all(bytes: &[u8]) -> Vec<(EntryKey, u64)> {
    let mut entries = Vec::with_capacity(bytes.len() / RECORD);
    for record in bytes.chunks_exact(RECORD) {
        let (body, crc) = record.split_at(24);
        if crc32fast::hash(body).to_le_bytes() != crc {
            break;
        }
        let (key, until) = body.split_at(16);
        let (Ok(key), Ok(until)) = (<[u8; 16]>::try_from(key), <[u8; 8]>::try_from(until)) else {
            break;
        };
        entries.push((u128::from_le_bytes(key), u64::from_le_bytes(until)));
    }
    entries
}

/// Reads the secret hash key in `dir`, or makes one (synced, then renamed into place, so a
/// crash never leaves half a key).
fn load_secret(dir: &Path) -> Result<[u8; 32], String> {
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| format!("dedupe log: {} is not a 32-byte key", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let secret: [u8; 32] = rand::random();
            let temp = dir.join(format!("{KEY_FILE}.new"));
            let mut file = File::create(&temp).map_err(|e| io_error("create", &temp, &e))?;
            file.write_all(&secret)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error("write", &temp, &e))?;
            std::fs::rename(&temp, &path).map_err(|e| io_error("rename", &temp, &e))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("sync", dir, &e))?;
            Ok(secret)
        }
        Err(err) => Err(io_error("read", &path, &err)),
    }
}

impl DedupeLog {
    /// Opens the index in `dir` for windows of `window_ms`, reading back every entry whose
    /// window has not ended by `now_ms` and deleting the files whose entries all have.
    pub(super) fn open(dir: &Path, window_ms: u64, now_ms: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, &e))?;
        let secret = load_secret(dir)?;
        let mut state = State {
            dir: dir.to_path_buf(),
            secret,
            span_ms: (window_ms / BUCKETS_PER_WINDOW).max(1),
            buckets: BTreeMap::new(),
            files: BTreeMap::new(),
            unsynced: Vec::new(),
            cut: Vec::new(),
        };
        let listing = std::fs::read_dir(dir).map_err(|e| io_error("list", dir, &e))?;
        for entry in listing {
            let entry = entry.map_err(|e| io_error("list", dir, &e))?;
            let path = entry.path();
            let Some(end) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if end <= now_ms {
                std::fs::remove_file(&path).map_err(|e| io_error("delete", &path, &e))?;
                continue;
            }
            state.recover(&path, end, now_ms)?;
        }
        state.report();
        Ok(Self(Mutex::new(state)))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `user`'s `id` with a window until `until_ms`, unless it is known with a window
    /// that has not ended by `now_ms`: whether it was new.
    pub(super) fn insert_new(&self, user: &str, id: &str, now_ms: u64, until_ms: u64) -> bool {
        let mut state = self.state();
        let key = state.key(user, id);
        if state
            .buckets
            .values()
            .rev()
            .any(|bucket| bucket.get(&key).is_some_and(|&until| until > now_ms))
        {
            return false;
        }
        let bucket = state.bucket_of(until_ms);
        let replaced = state
            .buckets
            .entry(bucket)
            .or_default()
            .insert(key, until_ms);
        state.unsynced.push(Unsynced {
            bucket,
            key,
            until: until_ms,
            replaced,
        });
        true
    }

    /// Forgets every bucket whose span has ended by `now_ms`, with its file.
    pub(super) fn purge(&self, now_ms: u64) -> Result<(), String> {
        let mut state = self.state();
        state.buckets.retain(|&end, _| end > now_ms);
        state.report();
        let ended: Vec<u64> = state.files.range(..=now_ms).map(|(&end, _)| end).collect();
        for end in ended {
            state.files.remove(&end);
            let path = state.dir.join(file_name(end));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_error("delete", &path, &err)),
            }
        }
        Ok(())
    }
}

impl State {
    /// Publishes how many ids the window holds (a sum over at most 17 buckets).
    fn report(&self) {
        let entries: usize = self.buckets.values().map(HashMap::len).sum();
        metrics::gauge!("envelope_router_embedded_dedupe_entries").set(entries as f64);
    }

    fn key(&self, user: &str, id: &str) -> EntryKey {
        let mut hasher = Sha256::new();
        hasher.update(self.secret);
        hasher.update((user.len() as u64).to_le_bytes());
        hasher.update(user.as_bytes());
        hasher.update(id.as_bytes());
        let digest = hasher.finalize();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        u128::from_le_bytes(key)
    }

    /// The end of the bucket holding entries whose window ends at `until_ms`.
    fn bucket_of(&self, until_ms: u64) -> u64 {
        (until_ms / self.span_ms + 1).saturating_mul(self.span_ms)
    }

    /// Reads back the file at `path` (named for the bucket ending at `end`): its entries still
    /// in their window go into memory, and a torn tail is cut off.
    fn recover(&mut self, path: &Path, end: u64, now_ms: u64) -> Result<(), String> {
        let mut bytes = Vec::new();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| io_error("open", path, &e))?;
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error("read", path, &e))?;
        let entries = decode_all(&bytes);
        let whole = (entries.len() * RECORD) as u64;
        if whole < bytes.len() as u64 {
            file.set_len(whole)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_error("cut the torn tail of", path, &e))?;
        }
        for (key, until) in entries {
            if until > now_ms {
                let bucket = self.bucket_of(until);
                let known = self
                    .buckets
                    .entry(bucket)
                    .or_default()
                    .entry(key)
                    .or_default();
                *known = (*known).max(until);
            }
        }
        self.files.insert(end, file);
        Ok(())
    }

    /// Appends the cut entries to their buckets' files and syncs them.
    fn sync(&mut self) -> Result<(), String> {
        let mut by_file: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for entry in &self.cut {
            by_file
                .entry(entry.bucket)
                .or_default()
                .extend_from_slice(&encode(entry.key, entry.until));
        }
        for (end, bytes) in by_file {
            let path = self.dir.join(file_name(end));
            let file = match self.files.entry(end) {
                std::collections::btree_map::Entry::Occupied(open) => open.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    let file = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(|e| io_error("open", &path, &e))?;
                    File::open(&self.dir)
                        .and_then(|dir| dir.sync_all())
                        .map_err(|e| io_error("sync", &self.dir, &e))?;
                    slot.insert(file)
                }
            };
            let whole = file.metadata().map(|m| m.len());
            if let Err(err) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
                // Cut a partial append back, so later records do not follow a torn one.
                if let Ok(len) = whole {
                    let _ = file.set_len(len);
                }
                return Err(io_error("append to", &path, &err));
            }
        }
        self.cut.clear();
        Ok(())
    }

    /// Takes `entries` back out of memory, newest first.
    fn undo(&mut self, entries: Vec<Unsynced>) {
        for entry in entries.into_iter().rev() {
            let Some(bucket) = self.buckets.get_mut(&entry.bucket) else {
                continue;
            };
            match entry.replaced {
                Some(until) => bucket.insert(entry.key, until),
                None => bucket.remove(&entry.key),
            };
        }
    }
}

impl DedupeLog {
    /// Sets the entries added so far aside for the commit in progress (later ones wait for
    /// the next); whether any are set aside.
    pub(super) fn cut(&self) -> bool {
        let mut state = self.state();
        let added = std::mem::take(&mut state.unsynced);
        state.cut.extend(added);
        !state.cut.is_empty()
    }

    /// Writes and syncs the cut entries; on failure takes them back out of memory (their
    /// envelopes are enqueued again, and a kept entry would take that for a resend).
    pub(super) fn sync_cut(&self) -> Result<(), String> {
        let mut state = self.state();
        if state.cut.is_empty() {
            return Ok(());
        }
        let synced = state.sync();
        if synced.is_err() {
            let cut = std::mem::take(&mut state.cut);
            state.undo(cut);
        }
        state.report();
        synced
    }

    /// Takes every entry not synced yet back out of memory: the cut ones and the later ones.
    pub(super) fn undo_unsynced(&self) {
        let mut state = self.state();
        let later = std::mem::take(&mut state.unsynced);
        state.undo(later);
        let cut = std::mem::take(&mut state.cut);
        state.undo(cut);
    }
}
