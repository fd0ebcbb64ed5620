//! The embedded bus's on-disk log: append-only segment files written by one thread with group
//! commit.
//!
//! A bus message is only ever appended, then acked once: a B-tree is more than it needs. Every
//! queued append goes out in one `write` and, when any of them must be durable, one
//! `fdatasync`. A message's caller learns its position (what its ack names) once the write is
//! done, while the sync runs, and hears again once the sync is done. Acks are records
//! too, written lazily (a lost ack only redelivers). A segment whose messages are all acked is
//! deleted; reading the log back yields the unacked messages.
//!
//! The writer thread hands each written batch to a syncer thread and goes on writing, so a
//! message written while a sync runs is not held back by it; one `fdatasync` covers every
//! batch written before it began. Both threads look for work for a moment before they sleep
//! ([`linger`]), so under load they are seldom woken.
//!
//! A fully acked segment is kept as a spare (`<first>.spare`, up to [`SPARE_SEGMENTS`]) and
//! renamed into place as a later segment, whose records overwrite its old ones from the start:
//! on this kind of disk a sync of blocks already written costs about half of one that also
//! grows the file (docs/performance-history.md, profiling log entries 28 and 39).
//!
//! Record: `len: u32 LE` (of what follows the checksum), `crc32: u32 LE` (of the same bytes),
//! then `kind: u8`, `seq: u64 LE`, `segment: u64 LE` (the first sequence number of the segment
//! it was written to) and, for a message, its bytes. A torn record at the end of a segment (a
//! crash mid-write) fails its length or checksum and ends the recovery of that segment; so
//! does a whole record naming another segment: what is left of the file's life as an earlier
//! segment. Every batch is written with an end mark after it (a header of zeros, overwritten
//! by the next batch), so reading stops cleanly there rather than in the middle of an older
//! record, which would look torn. Logs written before segments were recycled hold records
//! without the `segment` field (kinds 1 and 2, as the dead-letter file still does); they are
//! still read.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use crate::embedded::database::next_batch;
use crate::embedded::linger::{LINGER, Look, linger};
use crate::error::AdapterError;

/// A segment is closed for appends past this size, and a new one opened (the default of
/// `BUS_SEGMENT_BYTES`).
pub const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;

/// Fully acked segments kept to be written again as later segments, at most.
const SPARE_SEGMENTS: usize = 2;

/// The file name ending of a segment.
const SEGMENT_SUFFIX: &str = ".log";

/// The file name ending of a spare segment.
const SPARE_SUFFIX: &str = ".spare";

/// Appends waiting for the writer thread; callers wait when it is full.
const WRITE_QUEUE: usize = 4096;

/// Most appends folded into one write (one fsync).
const MAX_BATCH: usize = 1024;

/// Written batches waiting for the syncer thread; the writer waits when it is full.
const SYNC_QUEUE: usize = 64;

/// Bytes before the record's kind: its length and checksum.
const HEADER: usize = 8;

/// A message without a segment field (read back as this kind whatever its spelling).
const KIND_MESSAGE: u8 = 1;
/// An ack of the message with the record's `seq`, without a segment field.
const KIND_ACK: u8 = 2;
/// [`KIND_MESSAGE`] plus this: the same record naming the segment it was written to.
const SEGMENT_FIELD: u8 = 2;

/// The segment file name of the segment starting at `seq` (sorts by name as by number).
fn segment_name(first_seq: u64) -> String {
    numbered_name(first_seq, SEGMENT_SUFFIX)
}

/// The file name a retired segment starting at `seq` is kept under as a spare.
fn spare_name(first_seq: u64) -> String {
    numbered_name(first_seq, SPARE_SUFFIX)
}

/// `first_seq`, zero-padded to sort by name as by number, then `suffix`.
fn numbered_name(first_seq: u64, suffix: &str) -> String {
    format!("{first_seq:020}{suffix}")
}

/// The dead-letter file: messages the processor could never route, kept for an operator.
const DEAD_LETTER_FILE: &str = "dead-letter.log";

/// Appends one record of `kind` ([`KIND_MESSAGE`] or [`KIND_ACK`]) to `out`; given `segment`,
/// the record names it (the kinds plus [`SEGMENT_FIELD`]).
fn put_record(out: &mut Vec<u8>, kind: u8, seq: u64, segment: Option<u64>, body: &[u8]) {
    let start = out.len();
    let (kind, fields) = match segment {
        Some(_) => (kind + SEGMENT_FIELD, 17),
        None => (kind, 9),
    };
    out.reserve(HEADER + fields + body.len());
    out.extend_from_slice(&((fields + body.len()) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&seq.to_le_bytes());
    if let Some(segment) = segment {
        out.extend_from_slice(&segment.to_le_bytes());
    }
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One record read back: its kind ([`KIND_MESSAGE`] or [`KIND_ACK`]), sequence number and
/// body.
type ParsedRecord<'a> = (u8, u64, &'a [u8]);

/// Written after every batch of records (and overwritten by the next): a header of zeros,
/// where reading a segment stops cleanly, before whatever a recycled file holds past it.
const END_MARK: [u8; HEADER] = [0; HEADER];

/// Where reading a segment's records stopped.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum SegmentEnd {
    /// At the end of the file, or at the end mark after the last batch.
    Clean,
    /// At a whole record of another segment: the rest of a recycled file's earlier life.
    Recycled,
    /// At a record cut short or damaged: a crash mid-write.
    Torn,
}

/// What one segment file held.
#[derive(Debug, PartialEq)]
struct ParsedSegment<'a> {
    /// Its records, in order.
    records: Vec<ParsedRecord<'a>>,
    /// How many bytes they took.
    whole: usize,
    /// What came after them.
    end: SegmentEnd,
}

/// The little-endian `u64` at `at` in `bytes` (which must hold it).
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut value = [0; 8];
    value.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(value)
}

/// Reads the records of segment `segment` from its file's `bytes`, until the end, the end
/// mark, the first torn record, or the first record naming another segment.
fn parse_records(bytes: &[u8], segment: u64) -> ParsedSegment<'_> {
    const NAMED_MESSAGE: u8 = KIND_MESSAGE + SEGMENT_FIELD;
    const NAMED_ACK: u8 = KIND_ACK + SEGMENT_FIELD;
    let mut records = Vec::new();
    let mut at = 0;
    let end = loop {
        let Some(header) = bytes.get(at..at + HEADER) else {
            break if at == bytes.len() {
                SegmentEnd::Clean
            } else {
                SegmentEnd::Torn
            };
        };
        if header == END_MARK {
            break SegmentEnd::Clean;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(body) = bytes.get(at + HEADER..at + HEADER + len) else {
            break SegmentEnd::Torn;
        };
        if len < 9 || crc32fast::hash(body) != crc {
            break SegmentEnd::Torn;
        }
        let seq = u64_at(body, 1);
        let record = match body[0] {
            NAMED_MESSAGE | NAMED_ACK if len < 17 => break SegmentEnd::Torn,
            NAMED_MESSAGE | NAMED_ACK if u64_at(body, 9) != segment => {
                break SegmentEnd::Recycled;
            }
            kind @ (NAMED_MESSAGE | NAMED_ACK) => (kind - SEGMENT_FIELD, seq, &body[17..]),
            kind => (kind, seq, &body[9..]),
        };
        records.push(record);
        at += HEADER + len;
    };
    ParsedSegment {
        records,
        whole: at,
        end,
    }
}

/// A message the log holds unacked, as read back at open.
pub struct Recovered {
    /// Its sequence number (bus order).
    pub seq: u64,
    /// The segment holding it.
    pub segment: u64,
    /// The message's bytes.
    pub bytes: Vec<u8>,
}

/// Where an appended message landed: what its ack names.
#[derive(Clone, Copy, Debug)]
pub struct Position {
    /// Its sequence number.
    pub seq: u64,
    /// The segment holding it.
    pub segment: u64,
}

/// What the writer thread calls with a message's position once it is written (or with the
/// write's error), before the batch's sync. It runs on the writer thread: it must not block.
pub type OnWritten = Box<dyn FnOnce(Result<Position, String>) + Send>;

enum Job {
    /// Appends a message under the next sequence number; calls `written` with its position
    /// once written, before the batch's sync, and answers `done` once synced (if `durable`).
    Message {
        bytes: Vec<u8>,
        durable: bool,
        written: OnWritten,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Appends an ack of `position` lazily; nobody waits for it.
    Ack { position: Position },
    /// Appends to the dead-letter file, durably.
    DeadLetter {
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Syncs everything written so far.
    Flush {
        done: oneshot::Sender<Result<(), String>>,
    },
}

/// The signal that an appended message is on disk.
pub struct Synced(oneshot::Receiver<Result<(), String>>);

impl Synced {
    /// Waits until the message is on disk, or says why it may not be.
    pub async fn wait(self) -> Result<(), AdapterError> {
        self.0
            .await
            .map_err(|_| stopped())?
            .map_err(AdapterError::Database)
    }
}

/// A cloneable handle on the bus log.
#[derive(Clone)]
pub struct BusLog {
    jobs: mpsc::Sender<Job>,
}

fn stopped() -> AdapterError {
    AdapterError::Database("bus log writer stopped".into())
}

fn io_error(context: &str, path: &Path, err: std::io::Error) -> String {
    format!("{context} {}: {err}", path.display())
}

impl BusLog {
    /// Opens (or creates) the log in `dir`, returns the unacked messages in bus order, and
    /// starts the writer thread (which numbers every later message and closes a segment for
    /// appends once it holds `segment_bytes`).
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Self, Vec<Recovered>), AdapterError> {
        let fail = |cause: String| AdapterError::OpenDatabase {
            path: dir.display().to_string(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let mut segments = Vec::new();
        let mut spares = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| fail(e.to_string()))? {
            let entry = entry.map_err(|e| fail(e.to_string()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let numbered = |suffix: &str| {
                name.strip_suffix(suffix)
                    .and_then(|n| n.parse::<u64>().ok())
            };
            if let Some(first) = numbered(SEGMENT_SUFFIX) {
                segments.push((first, entry.path()));
            } else if numbered(SPARE_SUFFIX).is_some() {
                spares.push(entry.path());
            }
        }
        segments.sort();
        // Spares only ever hold records naming their earlier segment: reusable as they are.
        spares.sort();
        for extra in spares.split_off(spares.len().min(SPARE_SEGMENTS)) {
            if let Err(err) = std::fs::remove_file(&extra) {
                warn!(spare = %extra.display(), cause = %err, "cannot delete a spare bus log segment");
            }
        }
        let mut pending: BTreeMap<u64, (u64, Vec<u8>)> = BTreeMap::new();
        let mut next_seq = 1;
        for (first, path) in &segments {
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| fail(io_error("reading", path, e)))?;
            let parsed = parse_records(&bytes, *first);
            if parsed.end == SegmentEnd::Torn {
                warn!(segment = %path.display(), torn_bytes = bytes.len() - parsed.whole, "bus log segment ends in a torn record (a crash mid-write); ignoring it");
            }
            for (kind, seq, body) in parsed.records {
                next_seq = next_seq.max(seq + 1);
                match kind {
                    KIND_MESSAGE => {
                        pending.insert(seq, (*first, body.to_vec()));
                    }
                    KIND_ACK => {
                        pending.remove(&seq);
                    }
                    other => warn!(kind = other, "unknown bus log record kind; skipped"),
                }
            }
        }
        let mut live: HashMap<u64, usize> = HashMap::new();
        for (segment, _) in pending.values() {
            *live.entry(*segment).or_default() += 1;
        }
        // Segments with nothing unacked are done; the others stay until their last ack.
        let mut kept = BTreeMap::new();
        for (first, path) in segments {
            if live.contains_key(&first) {
                kept.insert(first, path);
            } else if let Err(err) = std::fs::remove_file(&path) {
                warn!(segment = %path.display(), cause = %err, "cannot delete an acked bus log segment");
            }
        }
        let recovered = pending
            .into_iter()
            .map(|(seq, (segment, bytes))| Recovered {
                seq,
                segment,
                bytes,
            })
            .collect();
        let writer =
            Writer::open(dir, kept, live, spares, next_seq, segment_bytes).map_err(fail)?;
        let syncer = Syncer::new(writer.sync_failed.clone());
        let (jobs, queue) = mpsc::channel(WRITE_QUEUE);
        let (to_sync, written) = std::sync::mpsc::sync_channel(SYNC_QUEUE);
        std::thread::Builder::new()
            .name("embedded-bus-sync".into())
            .spawn(move || syncer.run(written))
            .map_err(|e| fail(e.to_string()))?;
        std::thread::Builder::new()
            .name("embedded-bus-log".into())
            .spawn(move || writer.run(queue, to_sync))
            .map_err(|e| fail(e.to_string()))?;
        Ok((Self { jobs }, recovered))
    }

    async fn call<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Job,
    ) -> Result<T, AdapterError> {
        let (done, answer) = oneshot::channel();
        self.jobs.send(job(done)).await.map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(AdapterError::Database)
    }

    /// Queues a message for appending and returns the signal of its sync. The writer thread
    /// calls `on_written` with the message's position once it is written, while its batch's
    /// `fdatasync` still runs (the embedded bus tells the message's ack from there). A process
    /// crash after the write keeps the message (the page cache survives it); a machine crash
    /// before the sync may lose it.
    pub async fn append(
        &self,
        bytes: Vec<u8>,
        on_written: OnWritten,
    ) -> Result<Synced, AdapterError> {
        let (done, synced) = oneshot::channel();
        self.jobs
            .send(Job::Message {
                bytes,
                durable: true,
                written: on_written,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        Ok(Synced(synced))
    }

    /// Queues an ack of the message at `position` and returns without waiting for it: the
    /// writer applies it in order with every job queued before and after it. Lazy: a crash
    /// may lose it (the message is then redelivered), unless its segment was already deleted.
    pub async fn ack(&self, position: Position) -> Result<(), AdapterError> {
        self.jobs
            .send(Job::Ack { position })
            .await
            .map_err(|_| stopped())
    }

    /// Appends `bytes` to the dead-letter file and returns once it is on disk.
    pub async fn dead_letter(&self, bytes: Vec<u8>) -> Result<(), AdapterError> {
        self.call(|done| Job::DeadLetter { bytes, done }).await
    }

    /// Makes every lazy write so far durable (graceful shutdown).
    pub async fn flush(&self) -> Result<(), AdapterError> {
        self.call(|done| Job::Flush { done }).await
    }

    /// Whether the writer thread is running.
    pub fn is_running(&self) -> bool {
        !self.jobs.is_closed()
    }
}

/// The open segment that takes appends.
struct Current {
    first_seq: u64,
    /// Shared with the syncer, which syncs it after the writer moved on.
    file: Arc<File>,
    /// Where the next record goes: the end of this segment's records (a recycled file may
    /// hold older bytes past it).
    len: u64,
}

/// Creates segment `first_seq` in `dir`, from the `spare` file if given (its records are
/// overwritten from the start), and makes its name durable before anything is written to it:
/// after a crash a recycled file is only ever read under its new name. Without a spare the
/// file starts empty (a name past every segment holds nothing to keep).
fn create_segment(
    dir: &Path,
    first_seq: u64,
    spare: Option<&Path>,
) -> Result<(Current, PathBuf), String> {
    let path = dir.join(segment_name(first_seq));
    if let Some(spare) = spare {
        std::fs::rename(spare, &path).map_err(|e| io_error("reusing", spare, e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(spare.is_none())
        .open(&path)
        .map_err(|e| io_error("creating", &path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing", dir, e))?;
    Ok((
        Current {
            first_seq,
            file: Arc::new(file),
            len: 0,
        },
        path,
    ))
}

/// Creates segment `name` in `dir` from one of `spares` when there is one (a spare that
/// cannot be reused is deleted, and a new file made instead).
fn create_from_spares(
    dir: &Path,
    spares: &mut Vec<PathBuf>,
    name: u64,
) -> Result<(Current, PathBuf), String> {
    if let Some(spare) = spares.pop() {
        match create_segment(dir, name, Some(&spare)) {
            Ok(created) => return Ok(created),
            Err(cause) => {
                warn!(%cause, "bus log: cannot reuse a spare segment; making a new one");
                let _ = std::fs::remove_file(&spare);
            }
        }
    }
    create_segment(dir, name, None)
}

/// The name of the next segment: its first sequence number, and past every existing name.
fn next_segment_name(segments: &BTreeMap<u64, PathBuf>, next_seq: u64) -> u64 {
    segments
        .keys()
        .next_back()
        .map_or(next_seq, |last| next_seq.max(last + 1))
}

/// A batch written but not yet synced: what [`Syncer::sync`] finishes.
struct WrittenBatch {
    /// The segment it was written to, and its file.
    segment: u64,
    file: Arc<File>,
    /// The segment write's result.
    written: Result<(), String>,
    /// Whether a message in it must be durable.
    sync: bool,
    /// The dead-letter write's result (synced already).
    dead: Result<(), String>,
    /// Who hears the result once synced.
    answers: Vec<Answer>,
}

/// The writer thread's state: every segment and how many unacked messages each holds.
struct Writer {
    dir: PathBuf,
    segments: BTreeMap<u64, PathBuf>,
    live: HashMap<u64, usize>,
    current: Current,
    dead: Option<File>,
    /// The current segment may end in a partial record: appends must go to a new one.
    needs_roll: bool,
    /// The sequence number of the next message or dead letter.
    next_seq: u64,
    /// Set by the syncer when a sync failed: appends move to a new segment.
    sync_failed: Arc<AtomicBool>,
    /// Fully acked segment files waiting to be written again as the next segments.
    spares: Vec<PathBuf>,
    /// The first segment this run made. Every segment named below it was read back from an
    /// earlier run and may hold records without a segment field, which a later life of the
    /// file could not tell from its own, so it is never recycled. (New names are always past
    /// every existing one.)
    first_own: u64,
    /// Whether retired segments become spares: not after a failed write or sync, whose file
    /// the kernel may have left in any state.
    recycling: bool,
    /// A segment is closed for appends past this size.
    segment_bytes: u64,
    /// The buffer a batch's records are put in, kept between batches so its memory is reused
    /// (up to [`KEPT_RECORDS_BYTES`]).
    records: Vec<u8>,
}

/// Most capacity the writer keeps in its record buffer between batches; a larger batch's
/// buffer is let go.
const KEPT_RECORDS_BYTES: usize = 1 << 20;

/// What a batch owes its callers once synced.
enum Answer {
    /// A message (told its position already) or a flush: the segment write's and sync's
    /// result.
    Synced(oneshot::Sender<Result<(), String>>),
    /// A dead letter: the dead-letter file write's result.
    Dead(oneshot::Sender<Result<(), String>>),
}

impl Writer {
    /// A writer over the `segments` kept from earlier runs (with their `live` counts) and the
    /// `spares` left by them, appending to a new segment from `next_seq` on and closing each
    /// segment past `segment_bytes`.
    fn open(
        dir: &Path,
        segments: BTreeMap<u64, PathBuf>,
        live: HashMap<u64, usize>,
        spares: Vec<PathBuf>,
        next_seq: u64,
        segment_bytes: u64,
    ) -> Result<Self, String> {
        let mut segments = segments;
        let mut spares = spares;
        let name = next_segment_name(&segments, next_seq);
        let (current, path) = create_from_spares(dir, &mut spares, name)?;
        segments.insert(name, path);
        Ok(Self {
            dir: dir.to_path_buf(),
            segments,
            live,
            current,
            dead: None,
            needs_roll: false,
            next_seq,
            sync_failed: Arc::new(AtomicBool::new(false)),
            spares,
            first_own: name,
            recycling: true,
            segment_bytes,
            records: Vec::new(),
        })
    }

    /// Switches appends to a new segment; the old one is retired if nothing in it is unacked.
    /// On failure the current segment stays.
    fn roll(&mut self) -> Result<(), String> {
        let name = next_segment_name(&self.segments, self.next_seq);
        let (current, path) = create_from_spares(&self.dir, &mut self.spares, name)?;
        self.segments.insert(name, path);
        let old = std::mem::replace(&mut self.current, current);
        self.needs_roll = false;
        if self.live.get(&old.first_seq).copied().unwrap_or(0) == 0 {
            self.retire_segment(old.first_seq);
        }
        Ok(())
    }

    /// Drops a segment whose messages are all acked: kept as a spare while there is room for
    /// one and it may be recycled, deleted otherwise.
    fn retire_segment(&mut self, first_seq: u64) {
        self.live.remove(&first_seq);
        let Some(path) = self.segments.remove(&first_seq) else {
            return;
        };
        if self.recycling && self.spares.len() < SPARE_SEGMENTS && first_seq >= self.first_own {
            let spare = self.dir.join(spare_name(first_seq));
            match std::fs::rename(&path, &spare) {
                Ok(()) => {
                    self.spares.push(spare);
                    return;
                }
                Err(err) => {
                    warn!(segment = %path.display(), cause = %err, "cannot keep an acked bus log segment as a spare");
                }
            }
        }
        if let Err(err) = std::fs::remove_file(&path) {
            warn!(segment = %path.display(), cause = %err, "cannot delete an acked bus log segment");
        }
    }

    /// Stops recycling segments (after a failed write or sync) and deletes the spares.
    fn stop_recycling(&mut self) {
        self.recycling = false;
        for spare in self.spares.drain(..) {
            let _ = std::fs::remove_file(&spare);
        }
    }

    fn run(
        mut self,
        mut queue: mpsc::Receiver<Job>,
        to_sync: std::sync::mpsc::SyncSender<WrittenBatch>,
    ) {
        while let Some(batch) = next_batch(&mut queue, MAX_BATCH) {
            let written = self.write_batch(batch);
            if to_sync.send(written).is_err() {
                error!("bus log: the syncer thread stopped; no more appends");
                return;
            }
            self.roll_if_due();
        }
        drop(to_sync);
        if let Err(err) = self.current.file.sync_data() {
            error!(cause = %err, "bus log: final sync failed");
        }
    }

    /// Writes one batch: messages and acks to the current segment, dead letters to their file
    /// (synced). Tells each message's caller its position (or the write's error) at once: the
    /// processor may route a message while its sync runs. [`Syncer::sync`] does the rest.
    fn write_batch(&mut self, batch: Vec<Job>) -> WrittenBatch {
        // A segment whose sync failed, or that may end in a partial record, takes no more
        // appends.
        if self.sync_failed.swap(false, Ordering::SeqCst) {
            self.needs_roll = true;
            self.stop_recycling();
        }
        let blocked = if self.needs_roll {
            self.roll().err()
        } else {
            None
        };
        let segment = self.current.first_seq;
        let mut segment_bytes = std::mem::take(&mut self.records);
        segment_bytes.clear();
        let mut dead_bytes = Vec::new();
        let mut sync = false;
        let mut answers = Vec::with_capacity(batch.len());
        let mut positions = Vec::new();
        let mut acked = Vec::new();
        let mut appended = 0;
        for job in batch {
            match job {
                Job::Message {
                    bytes,
                    durable,
                    written,
                    done,
                } => {
                    let seq = self.take_seq();
                    put_record(&mut segment_bytes, KIND_MESSAGE, seq, Some(segment), &bytes);
                    sync |= durable;
                    appended += 1;
                    positions.push((written, Position { seq, segment }));
                    answers.push(Answer::Synced(done));
                }
                Job::Ack { position } => {
                    put_record(
                        &mut segment_bytes,
                        KIND_ACK,
                        position.seq,
                        Some(segment),
                        &[],
                    );
                    acked.push(position.segment);
                }
                Job::DeadLetter { bytes, done } => {
                    let seq = self.take_seq();
                    put_record(&mut dead_bytes, KIND_MESSAGE, seq, None, &bytes);
                    answers.push(Answer::Dead(done));
                }
                Job::Flush { done } => {
                    sync = true;
                    answers.push(Answer::Synced(done));
                }
            }
        }
        let written = match blocked {
            Some(cause) => Err(format!("bus log: no segment to append to: {cause}")),
            None => self.append_segment(&mut segment_bytes),
        };
        if segment_bytes.capacity() <= KEPT_RECORDS_BYTES {
            self.records = segment_bytes;
        }
        let dead = self.append_dead(&dead_bytes);
        for cause in [&written, &dead]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
        {
            error!(%cause, "bus log write failed");
        }
        // Count what is now in the segment, and settle acks, before handing messages on: an
        // ack of a message handed on here comes in a later batch. A message counts from its
        // write on, since its caller may hand it on even if the sync then fails.
        if written.is_ok() {
            *self.live.entry(segment).or_default() += appended;
            for segment in acked {
                self.settle(segment);
            }
        }
        for (on_written, position) in positions {
            on_written(written.clone().map(|()| position));
        }
        WrittenBatch {
            segment,
            file: self.current.file.clone(),
            written,
            sync,
            dead,
            answers,
        }
    }

    /// Opens a new segment once the current one is full or may end in a partial record (the
    /// old one is synced by the batches that wrote it, which hold its file).
    fn roll_if_due(&mut self) {
        if (self.needs_roll || self.current.len >= self.segment_bytes)
            && let Err(cause) = self.roll()
        {
            error!(%cause, "bus log: cannot open a new segment; the next batch tries again");
        }
    }

    /// The next sequence number, taken.
    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Counts one ack against `segment`; a closed segment with nothing unacked is deleted.
    fn settle(&mut self, segment: u64) {
        let left = match self.live.get_mut(&segment) {
            Some(live) => {
                *live = live.saturating_sub(1);
                *live
            }
            None => return,
        };
        if left == 0 && self.current.first_seq != segment {
            self.retire_segment(segment);
        }
    }

    /// Appends the records in `bytes` to the current segment (not synced), with the end mark
    /// after them in the same write; the next batch starts over the mark.
    fn append_segment(&mut self, bytes: &mut Vec<u8>) -> Result<(), String> {
        let current = &mut self.current;
        if bytes.is_empty() {
            return Ok(());
        }
        let records = bytes.len() as u64;
        bytes.extend_from_slice(&END_MARK);
        if let Err(err) = current.file.write_all_at(bytes, current.len) {
            // A partial record would end recovery of this segment early and hide every
            // record appended after it: cut the file back to its last whole record.
            if let Err(cut) = current.file.set_len(current.len) {
                error!(cause = %cut, "bus log: cannot cut a partial write; opening a new segment");
                self.needs_roll = true;
            }
            self.stop_recycling();
            return Err(format!("appending to the bus log: {err}"));
        }
        current.len += records;
        Ok(())
    }

    fn append_dead(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.dead.is_none() {
            let path = self.dir.join(DEAD_LETTER_FILE);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| io_error("opening", &path, e))?;
            self.dead = Some(file);
        }
        let Some(dead) = self.dead.as_mut() else {
            return Err("dead-letter file not open".into());
        };
        dead.write_all(bytes)
            .and_then(|()| dead.sync_data())
            .map_err(|e| format!("writing the dead-letter file: {e}"))
    }
}

/// The syncer thread's state: syncs written batches and answers their callers.
struct Syncer {
    /// Tells the writer a sync failed.
    failed: Arc<AtomicBool>,
    /// Segments a sync failed on. Every later sync of them fails too: the kernel may have
    /// dropped pages it could not write, and a later `fdatasync` would not say so.
    poisoned: HashSet<u64>,
}

impl Syncer {
    fn new(failed: Arc<AtomicBool>) -> Self {
        Self {
            failed,
            poisoned: HashSet::new(),
        }
    }

    /// Takes every batch written so far, syncs it, and waits for the next (lingering before
    /// it sleeps, see [`linger`]).
    fn run(mut self, written: std::sync::mpsc::Receiver<WrittenBatch>) {
        loop {
            let first = match linger(LINGER, || written.try_recv().into()) {
                Look::Found(batch) => batch,
                Look::Closed => return,
                Look::Empty => match written.recv() {
                    Ok(batch) => batch,
                    Err(_) => return,
                },
            };
            let mut batches = vec![first];
            batches.extend(written.try_iter().take(SYNC_QUEUE));
            self.sync(batches);
        }
    }

    /// Syncs each segment `batches` wrote to once, if any of them asked for it, and answers
    /// every caller with its write's and its sync's result.
    fn sync(&mut self, batches: Vec<WrittenBatch>) {
        let mut synced: HashMap<u64, Result<(), String>> = HashMap::new();
        for batch in &batches {
            if !batch.sync || batch.written.is_err() || synced.contains_key(&batch.segment) {
                continue;
            }
            let result = if self.poisoned.contains(&batch.segment) {
                Err("syncing the bus log: an earlier sync of this segment failed".to_owned())
            } else {
                batch
                    .file
                    .sync_data()
                    .map_err(|e| format!("syncing the bus log: {e}"))
            };
            if let Err(cause) = &result {
                error!(%cause, "bus log sync failed; opening a new segment");
                self.poisoned.insert(batch.segment);
                self.failed.store(true, Ordering::SeqCst);
            }
            synced.insert(batch.segment, result);
        }
        for batch in batches {
            let WrittenBatch {
                segment,
                written,
                sync,
                dead,
                answers,
                ..
            } = batch;
            let written = written.and_then(|()| match (sync, synced.get(&segment)) {
                (true, Some(result)) => result.clone(),
                _ => Ok(()),
            });
            for answer in answers {
                match answer {
                    Answer::Synced(done) => {
                        let _ = done.send(written.clone());
                    }
                    Answer::Dead(done) => {
                        let _ = done.send(dead.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh directory under the system's temp dir, unique to this process, `name` and the
    /// moment (the embedded bus's tests use it too).
    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "er-bus-log-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A writer on an empty `dir`, numbering from 1.
    fn new_writer(dir: &Path) -> Writer {
        Writer::open(
            dir,
            BTreeMap::new(),
            HashMap::new(),
            Vec::new(),
            1,
            SEGMENT_BYTES,
        )
        .unwrap()
    }

    /// One record as bytes.
    fn record(kind: u8, seq: u64, segment: Option<u64>, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_record(&mut out, kind, seq, segment, body);
        out
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let mut bytes = record(KIND_MESSAGE, 7, Some(5), b"hello");
        bytes.extend(record(KIND_ACK, 7, Some(5), &[]));
        // A segment of an older log: records without the segment field.
        bytes.extend(record(KIND_ACK, 3, None, &[]));
        let whole = bytes.len();
        let torn = record(KIND_MESSAGE, 8, Some(5), b"half written");
        bytes.extend_from_slice(&torn[..torn.len() - 3]);
        let parsed = parse_records(&bytes, 5);
        assert_eq!(parsed.whole, whole);
        assert_eq!(parsed.end, SegmentEnd::Torn);
        assert_eq!(
            parsed.records,
            vec![
                (KIND_MESSAGE, 7, &b"hello"[..]),
                (KIND_ACK, 7, &[][..]),
                (KIND_ACK, 3, &[][..])
            ]
        );
        let mut flipped = record(KIND_MESSAGE, 9, Some(5), b"x");
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            parse_records(&flipped, 5).whole,
            0,
            "a bad checksum is not a record"
        );
    }

    #[test]
    fn records_of_a_files_earlier_segment_end_it() {
        // Segment 40 was written over a file that held segment 10.
        let mut bytes = record(KIND_MESSAGE, 40, Some(40), b"new");
        let whole = bytes.len();
        bytes.extend(record(KIND_MESSAGE, 12, Some(10), b"old"));
        bytes.extend(record(KIND_ACK, 12, Some(10), &[]));
        let parsed = parse_records(&bytes, 40);
        assert_eq!(parsed.records, vec![(KIND_MESSAGE, 40, &b"new"[..])]);
        assert_eq!(parsed.whole, whole);
        assert_eq!(parsed.end, SegmentEnd::Recycled);
        // Renamed into place but not written yet: nothing of it is read.
        let parsed = parse_records(&bytes[whole..], 40);
        assert!(parsed.records.is_empty());
        assert_eq!(parsed.end, SegmentEnd::Recycled);
    }

    #[test]
    fn the_end_mark_ends_a_segment_cleanly_before_older_bytes() {
        // A batch written over the middle of an older record: the end mark after it stops
        // reading there, where the older bytes would read as a torn record.
        let mut bytes = record(KIND_ACK, 41, Some(40), &[]);
        let whole = bytes.len();
        bytes.extend_from_slice(&END_MARK);
        let old = record(KIND_MESSAGE, 12, Some(10), b"an older, longer record");
        bytes.extend_from_slice(&old[HEADER + 3..]);
        let parsed = parse_records(&bytes, 40);
        assert_eq!(parsed.records, vec![(KIND_ACK, 41, &[][..])]);
        assert_eq!((parsed.whole, parsed.end), (whole, SegmentEnd::Clean));
        // Without the mark the same bytes read as torn.
        let mut unmarked = bytes[..whole].to_vec();
        unmarked.extend_from_slice(&bytes[whole + HEADER..]);
        assert_eq!(parse_records(&unmarked, 40).end, SegmentEnd::Torn);
        assert_eq!(parse_records(&bytes[..whole], 40).end, SegmentEnd::Clean);
    }

    /// A message job, with the receivers of what its caller hears.
    struct Sent {
        job: Job,
        position: oneshot::Receiver<Result<Position, String>>,
        synced: oneshot::Receiver<Result<(), String>>,
    }

    /// A hand-off that passes the written message's position to `position`.
    fn tell(position: oneshot::Sender<Result<Position, String>>) -> OnWritten {
        Box::new(move |at| {
            let _ = position.send(at);
        })
    }

    /// A message job for `bytes`.
    fn message(bytes: &[u8]) -> Sent {
        let (written, position) = oneshot::channel();
        let (done, synced) = oneshot::channel();
        let job = Job::Message {
            bytes: bytes.to_vec(),
            durable: true,
            written: tell(written),
            done,
        };
        Sent {
            job,
            position,
            synced,
        }
    }

    /// Appends one message through `writer` and returns what its caller hears.
    fn append_one(writer: &mut Writer, bytes: &[u8]) -> Result<Position, String> {
        let Sent {
            job,
            mut position,
            mut synced,
        } = message(bytes);
        let written = writer.write_batch(vec![job]);
        writer.roll_if_due();
        Syncer::new(writer.sync_failed.clone()).sync(vec![written]);
        synced
            .try_recv()
            .unwrap_or_else(|_| Err("no answer".into()))?;
        position
            .try_recv()
            .unwrap_or_else(|_| Err("no answer".into()))
    }

    #[test]
    fn a_message_is_handed_on_once_written_and_confirmed_once_synced() {
        let dir = temp_dir("written-then-synced");
        let mut writer = new_writer(&dir);
        let Sent {
            job,
            mut position,
            mut synced,
        } = message(b"early");
        let written = writer.write_batch(vec![job]);
        let at = position.try_recv().unwrap().unwrap();
        assert_eq!((at.seq, at.segment), (1, 1));
        assert!(
            synced.try_recv().is_err(),
            "no confirmation before the sync"
        );
        // The process may die now: the record is in the file already.
        let path = writer.segments[&1].clone();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            parse_records(&bytes, 1).records,
            vec![(KIND_MESSAGE, 1, &b"early"[..])]
        );
        Syncer::new(writer.sync_failed.clone()).sync(vec![written]);
        assert_eq!(synced.try_recv().unwrap(), Ok(()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_writer_goes_on_writing_while_an_earlier_batch_waits_for_its_sync() {
        let dir = temp_dir("pipelined");
        let writer = new_writer(&dir);
        let failed = writer.sync_failed.clone();
        let (jobs, queue) = mpsc::channel(WRITE_QUEUE);
        // The test holds the syncer's end: nothing is synced until it says so.
        let (to_sync, written) = std::sync::mpsc::sync_channel(SYNC_QUEUE);
        let thread = std::thread::spawn(move || writer.run(queue, to_sync));
        let mut sent = Vec::new();
        for bytes in [&b"first"[..], b"second"] {
            let Sent {
                job,
                position,
                synced,
            } = message(bytes);
            jobs.blocking_send(job).unwrap();
            let at = position.blocking_recv().unwrap().unwrap();
            assert_eq!(
                at.seq as usize,
                sent.len() + 1,
                "written and told its position"
            );
            sent.push(synced);
        }
        for synced in &mut sent {
            assert!(synced.try_recv().is_err(), "no confirmation before a sync");
        }
        let mut batches = Vec::new();
        while batches.len() < 2 {
            batches.push(written.recv().unwrap());
        }
        Syncer::new(failed).sync(batches);
        for synced in sent {
            assert_eq!(synced.blocking_recv().unwrap(), Ok(()));
        }
        drop(jobs);
        thread.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn after_a_failed_sync_its_segment_confirms_nothing_more_and_takes_no_more_appends() {
        let dir = temp_dir("failed-sync");
        let mut writer = new_writer(&dir);
        let mut syncer = Syncer::new(writer.sync_failed.clone());
        let first = message(b"first");
        let second = message(b"second");
        // Both are written before any sync runs, as when the syncer lags behind the writer.
        let mut failing = writer.write_batch(vec![first.job]);
        let later = writer.write_batch(vec![second.job]);
        assert_eq!((failing.segment, later.segment), (1, 1));
        // A handle whose fdatasync fails (EINVAL) stands in for a disk error.
        failing.file = Arc::new(OpenOptions::new().write(true).open("/dev/null").unwrap());
        syncer.sync(vec![failing]);
        let mut synced = first.synced;
        assert!(synced.try_recv().unwrap().is_err());
        // The later batch's own sync would succeed; the segment may have a hole before it.
        syncer.sync(vec![later]);
        let mut synced = second.synced;
        assert!(
            synced.try_recv().unwrap().is_err(),
            "nothing behind a failed sync is confirmed"
        );
        let third = message(b"third");
        let next = writer.write_batch(vec![third.job]);
        assert_ne!(next.segment, 1, "appends move to a new segment");
        syncer.sync(vec![next]);
        let mut synced = third.synced;
        assert_eq!(synced.try_recv().unwrap(), Ok(()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn after_a_failed_write_appends_go_to_a_new_segment() {
        let dir = temp_dir("failed-write");
        let mut writer = new_writer(&dir);
        // A read-only handle: the write fails, and so does cutting the file back.
        let path = writer.segments[&1].clone();
        writer.current.file = Arc::new(File::open(&path).unwrap());
        assert!(append_one(&mut writer, b"refused").is_err());
        let current = writer.current.first_seq;
        assert_ne!(current, 1, "a new segment takes the next appends");
        assert!(
            !writer.live.contains_key(&1),
            "nothing counted for the failed write"
        );
        append_one(&mut writer, b"kept").unwrap();
        drop(writer);
        let (_log, recovered) = BusLog::open(&dir, SEGMENT_BYTES).unwrap();
        let bytes: Vec<_> = recovered.iter().map(|r| r.bytes.clone()).collect();
        assert_eq!(bytes, vec![b"kept".to_vec()]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Acks `position` through `writer` (lazily, as the bus does).
    fn ack_one(writer: &mut Writer, position: Position) {
        let written = writer.write_batch(vec![Job::Ack { position }]);
        assert!(written.written.is_ok());
        writer.roll_if_due();
    }

    /// The files in `dir` whose names end in `suffix`.
    fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.to_string_lossy().ends_with(suffix))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn acked_segments_are_written_again_and_read_back_without_their_old_records() {
        let dir = temp_dir("recycle");
        let mut writer = new_writer(&dir);
        // Two of these messages fill a segment.
        writer.segment_bytes = 200;
        let old = vec![b'x'; 120];
        let positions: Vec<_> = (0..6)
            .map(|_| append_one(&mut writer, &old).unwrap())
            .collect();
        for position in positions {
            ack_one(&mut writer, position);
        }
        // Three segments were retired: two kept as spares, the third deleted.
        assert_eq!(files_ending(&dir, SPARE_SUFFIX).len(), SPARE_SEGMENTS);
        assert_eq!(writer.spares.len(), SPARE_SEGMENTS);
        let taken = writer.spares.last().cloned().unwrap();
        writer.needs_roll = true;
        writer.roll_if_due();
        assert!(!taken.exists(), "the next segment took a spare");
        let reused = writer.segments[&writer.current.first_seq].clone();
        let old_len = std::fs::metadata(&reused).unwrap().len();
        assert!(
            old_len >= 200,
            "the new segment is an old file: {old_len} bytes"
        );
        // One unacked message over the old records, of their size: the record after it is
        // whole, and its ack is not in the log any more.
        let kept = append_one(&mut writer, &[b'k'; 120]).unwrap();
        assert_eq!(kept.segment, writer.current.first_seq);
        assert_eq!(std::fs::metadata(&reused).unwrap().len(), old_len);
        // Its ack, shorter than the old records, ends in the middle of one: the end mark
        // keeps that from reading as a torn record.
        ack_one(&mut writer, kept);
        let bytes = std::fs::read(&reused).unwrap();
        let parsed = parse_records(&bytes, kept.segment);
        assert_eq!(parsed.records.len(), 2);
        assert_eq!(parsed.end, SegmentEnd::Clean);
        let kept = append_one(&mut writer, &[b'k'; 120]).unwrap();
        drop(writer);
        let spares = files_ending(&dir, SPARE_SUFFIX).len();
        assert!(spares > 0);
        let (log, recovered) = BusLog::open(&dir, SEGMENT_BYTES).unwrap();
        let bytes: Vec<_> = recovered.iter().map(|r| r.bytes.clone()).collect();
        assert_eq!(bytes, vec![vec![b'k'; 120]], "no old record comes back");
        assert_eq!(recovered[0].segment, kept.segment);
        assert_eq!(
            files_ending(&dir, SPARE_SUFFIX).len(),
            spares - 1,
            "the new run's first segment takes a spare left by the earlier run"
        );
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn after_a_failed_write_no_segment_is_recycled() {
        let dir = temp_dir("no-recycle");
        let mut writer = new_writer(&dir);
        writer.segment_bytes = 200;
        let first = append_one(&mut writer, &[b'x'; 120]).unwrap();
        append_one(&mut writer, &[b'x'; 120]).unwrap();
        ack_one(&mut writer, first);
        let path = writer.segments[&writer.current.first_seq].clone();
        writer.current.file = Arc::new(File::open(&path).unwrap());
        assert!(append_one(&mut writer, b"refused").is_err());
        assert!(!writer.recycling);
        let later = append_one(&mut writer, b"later").unwrap();
        ack_one(&mut writer, Position { seq: 2, segment: 1 });
        ack_one(&mut writer, later);
        assert!(
            files_ending(&dir, SPARE_SUFFIX).is_empty(),
            "retired segments are deleted"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Appends `bytes` through `log` and returns its position once it is on disk.
    async fn append(log: &BusLog, bytes: &[u8]) -> Result<Position, AdapterError> {
        let (written, position) = oneshot::channel();
        let synced = log.append(bytes.to_vec(), tell(written)).await?;
        synced.wait().await?;
        position
            .await
            .map_err(|_| stopped())?
            .map_err(AdapterError::Database)
    }

    #[tokio::test]
    async fn unacked_messages_come_back_and_acked_segments_go() {
        let dir = temp_dir("recover");
        let (log, recovered) = BusLog::open(&dir, SEGMENT_BYTES).unwrap();
        assert!(recovered.is_empty());
        let a = append(&log, b"a").await.unwrap();
        let b = append(&log, b"b").await.unwrap();
        log.ack(a).await.unwrap();
        log.flush().await.unwrap();
        drop(log);
        // The writer thread ends once every handle is gone; give it a moment to close files.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (log, recovered) = BusLog::open(&dir, SEGMENT_BYTES).unwrap();
        let seqs: Vec<_> = recovered.iter().map(|r| (r.seq, r.bytes.clone())).collect();
        assert_eq!(seqs, vec![(b.seq, b"b".to_vec())]);
        // Numbering goes on after the last record of the earlier run.
        let c = append(&log, b"c").await.unwrap();
        assert_eq!(c.seq, b.seq + 1);
        // Acking the last message of the old segment deletes it.
        let old_segment = dir.join(segment_name(recovered[0].segment));
        assert!(old_segment.exists());
        log.ack(Position {
            seq: recovered[0].seq,
            segment: recovered[0].segment,
        })
        .await
        .unwrap();
        // A flush is answered after every job queued before it.
        log.flush().await.unwrap();
        assert!(
            !old_segment.exists(),
            "a fully acked segment of an earlier run is deleted"
        );
        assert!(
            files_ending(&dir, SPARE_SUFFIX).is_empty(),
            "and not recycled: it may hold records without a segment field"
        );
        log.ack(c).await.unwrap();
        log.dead_letter(b"bad".to_vec()).await.unwrap();
        assert!(dir.join(DEAD_LETTER_FILE).exists());
        drop(log);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (_log, recovered) = BusLog::open(&dir, SEGMENT_BYTES).unwrap();
        assert!(recovered.is_empty(), "dead letters are not redelivered");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
