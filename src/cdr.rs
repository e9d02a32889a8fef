//! Call detail records: one JSON line per call attempt in `cdr.path` (SPEC §2 `[cdr]`, §3.7).
//!
//! Owns: the [`CallRecord`] shape and its JSON names, the RFC 3339 rendering of its times, and
//! the dedicated writer thread that appends records to the file, batches them and fsyncs them so
//! that a record is on disk within 1 s of [`CdrSender::send`] and none is lost at shutdown
//! (SPEC §5). Must not: block a signalling worker (`send` is a `try_send` on a bounded queue; a
//! full queue hands the record back so the caller can count the drop), read clocks for the
//! record (callers stamp `start`/`answer`/`end` in unix milliseconds), or know about SIP.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use serde::Serializer;

/// Records the queue holds before [`CdrSender::send`] refuses one (about 25 MB at ~400 B each).
pub const QUEUE_CAPACITY: usize = 65_536;

/// The writer fsyncs at most this often, so a steady trickle of calls costs at most five
/// `sync_data` calls a second while a record still reaches the disk well within SPEC §3.7's 1 s.
/// How long the writer lets records gather after the first one wakes it (SPEC: written within
/// 1 s of the call's end).
const GATHER: Duration = Duration::from_millis(50);
const SYNC_INTERVAL: Duration = Duration::from_millis(200);

/// Records encoded into one `write`: bounds the writer's buffer (~1.6 MB) under a burst.
const MAX_BATCH: usize = 4096;

/// After an I/O error the writer retries (reopening the file) this often; meanwhile records wait
/// in the bounded queue, so a broken disk shows up as refused sends, not as memory growth.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// At shutdown a failing write is retried this many times before the batch is given up, so a
/// dead disk cannot hold the process past SIGTERM.
const SHUTDOWN_ATTEMPTS: u32 = 3;
const SHUTDOWN_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Which way a call went (SPEC §3.4, §3.5); `sipedge_calls_*{direction}` uses the same words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// PBX -> core.
    Termination,
    /// Core -> PBX.
    Origination,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Termination => "termination",
            Direction::Origination => "origination",
        }
    }
}

/// Why a call ended (SPEC §3.7 `end_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The caller (A leg) sent BYE.
    CallerBye,
    /// The callee (B leg) sent BYE.
    CalleeBye,
    /// The caller sent CANCEL before answer.
    Cancel,
    /// Refused by sipedge's own policy (limits, caller ID, codecs, ports, drain).
    Rejected,
    /// A final error from the far side, or no route.
    Failed,
    /// No media arrived for the configured time.
    MediaTimeout,
    /// `DELETE /api/v1/calls/{id}`.
    Admin,
    /// Still up when the shutdown drain ran out (SPEC §5).
    Shutdown,
}

/// One call attempt, as written to `cdr.path` (SPEC §3.7). Field order is the JSON key order.
///
/// Times are unix milliseconds (UTC) and are rendered as RFC 3339 with milliseconds, e.g.
/// `2026-11-23T21:04:05.123Z`.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct CallRecord {
    pub id: String,
    pub direction: Direction,
    /// `null` when the account belongs to no tenant.
    pub tenant: Option<String>,
    /// `username@realm`, or the trunk's name.
    pub account: String,
    /// E.164, or the raw user part when not a number.
    pub from: String,
    /// E.164, or the raw user part when not a number.
    pub to: String,
    #[serde(serialize_with = "serialize_time")]
    pub start: u64,
    /// `null` if never answered.
    #[serde(serialize_with = "serialize_optional_time")]
    pub answer: Option<u64>,
    #[serde(serialize_with = "serialize_time")]
    pub end: u64,
    /// Talk time: seconds from answer to end, 0 if never answered; see [`duration_s`].
    pub duration_s: f64,
    pub final_code: u16,
    pub end_reason: EndReason,
    /// Media received from the caller.
    pub a_packets: u64,
    pub a_bytes: u64,
    /// Media received from the callee.
    pub b_packets: u64,
    pub b_bytes: u64,
    /// The media block the call's packets went through: the runtime reads its counts into the
    /// fields above and frees it when the record is written (not part of the CDR).
    #[serde(skip)]
    pub media_block: Option<u32>,
}

/// `duration_s` for a call answered at `answer_ms` (if at all) that ended at `end_ms`.
///
/// It is the billable talk time — from answer to end, not from start — with millisecond
/// resolution, and 0 for a call never answered (its ringing time is `end - start`). A clock that
/// stepped backwards gives 0, never a negative duration.
pub fn duration_s(answer_ms: Option<u64>, end_ms: u64) -> f64 {
    match answer_ms {
        Some(answer_ms) => end_ms.saturating_sub(answer_ms) as f64 / 1000.0,
        None => 0.0,
    }
}

fn serialize_time<S: Serializer>(unix_ms: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(Rfc3339Ms::from_unix_ms(*unix_ms).as_str())
}

fn serialize_optional_time<S: Serializer>(
    unix_ms: &Option<u64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match unix_ms {
        Some(unix_ms) => serialize_time(unix_ms, serializer),
        None => serializer.serialize_none(),
    }
}

/// A UTC instant rendered as RFC 3339 with milliseconds (`YYYY-MM-DDTHH:MM:SS.mmmZ`), on the
/// stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339Ms([u8; 24]);

impl Rfc3339Ms {
    /// The last instant RFC 3339's four-digit year can hold; later times are clamped to it.
    pub const MAX_UNIX_MS: u64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

    /// Renders `unix_ms` (milliseconds since 1970-01-01T00:00:00Z, leap seconds not counted).
    pub fn from_unix_ms(unix_ms: u64) -> Self {
        let unix_ms = unix_ms.min(Self::MAX_UNIX_MS);
        let days = unix_ms / 86_400_000;
        let ms_of_day = unix_ms % 86_400_000;
        let (year, month, day) = civil_from_days(days);
        let (hour, minute) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
        let (second, milli) = (ms_of_day / 1000 % 60, ms_of_day % 1000);

        let mut buf = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut buf[0..4], year);
        put_digits(&mut buf[5..7], month);
        put_digits(&mut buf[8..10], day);
        put_digits(&mut buf[11..13], hour);
        put_digits(&mut buf[14..16], minute);
        put_digits(&mut buf[17..19], second);
        put_digits(&mut buf[20..23], milli);
        Rfc3339Ms(buf)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits are written into an ASCII template.
        std::str::from_utf8(&self.0).unwrap_or("0000-00-00T00:00:00.000Z")
    }
}

impl fmt::Display for Rfc3339Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Rfc3339Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Writes `value` as zero-padded decimal filling `out`.
fn put_digits(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// (year, month 1-12, day 1-31) of the proleptic Gregorian date `days` after 1970-01-01.
///
/// Howard Hinnant's `civil_from_days` (the inverse of `days_from_civil`), restricted to
/// non-negative day counts: the calendar repeats every 400-year era of 146 097 days, and
/// counting months from March puts the leap day at the end of the year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of March-based year, [0, 365]
    let mp = (5 * doy + 2) / 153; // March-based month, [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Why the CDR writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    /// The file (or its parent directory) could not be created or opened for appending.
    #[error("cannot open CDR file {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    /// The writer thread could not be started.
    #[error("cannot start the CDR writer thread for {}: {source}", path.display())]
    Spawn { path: PathBuf, source: io::Error },
}

/// The cheap, cloneable handle that call code uses to hand finished records to the writer.
#[derive(Clone, Debug)]
pub struct CdrSender {
    tx: Sender<CallRecord>,
    closed: Arc<AtomicBool>,
}

impl CdrSender {
    /// Queues `rec` for writing; never blocks. A full queue, or a writer that has shut down,
    /// hands the record back so the caller can count it as dropped.
    // The record itself is the error so nothing is lost or allocated on the refusal path; it is
    // moved once, and refusals are rare.
    #[allow(clippy::result_large_err)]
    pub fn send(&self, rec: CallRecord) -> Result<(), CallRecord> {
        if self.closed.load(Ordering::Acquire) {
            return Err(rec);
        }
        self.tx.try_send(rec).map_err(|err| match err {
            TrySendError::Full(rec) | TrySendError::Disconnected(rec) => rec,
        })
    }
}

/// The CDR writer thread. [`CdrWriter::shutdown`] (or dropping it) writes everything queued,
/// fsyncs and joins.
#[derive(Debug)]
pub struct CdrWriter {
    path: PathBuf,
    /// Dropping this tells the thread to drain and stop, even while senders are still alive.
    stop: Option<Sender<()>>,
    closed: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl CdrWriter {
    /// Creates `path`'s parent directory, opens `path` for appending (creating it) and starts
    /// the writer thread.
    pub fn spawn(path: &Path) -> Result<(CdrWriter, CdrSender), CdrError> {
        let file = open_append(path).map_err(|source| CdrError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_CAPACITY);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let closed = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let sink = Sink {
            path: path.to_path_buf(),
            file: Some(file),
            pending: Vec::with_capacity(64 * 1024),
            unsynced: false,
            last_sync: Instant::now(),
            failures: Arc::clone(&failures),
        };
        let thread = std::thread::Builder::new()
            .name("sipedge-cdr".into())
            .spawn(move || sink.run(&rx, &stop_rx))
            .map_err(|source| CdrError::Spawn {
                path: path.to_path_buf(),
                source,
            })?;
        let writer = CdrWriter {
            path: path.to_path_buf(),
            stop: Some(stop_tx),
            closed: Arc::clone(&closed),
            failures,
            thread: Some(thread),
        };
        Ok((writer, CdrSender { tx, closed }))
    }

    /// The file the records go to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Failed I/O operations (write, fsync, reopen) so far; each was logged and retried.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Stops accepting records, writes everything already queued, fsyncs and joins the thread.
    ///
    /// Call it after the calls have ended (SPEC §5: calls drain, then CDRs are flushed): a
    /// `send` racing with shutdown is either written or handed back, except in the instant
    /// between the final drain and the thread's exit.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.closed.store(true, Ordering::Release);
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(path = %self.path.display(), "CDR writer thread panicked");
            }
        }
    }
}

impl Drop for CdrWriter {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().append(true).create(true).open(path)
}

/// What woke the writer thread (a transient value on the writer's stack: its size is moot).
#[allow(clippy::large_enum_variant)]
enum Wake {
    Record(CallRecord),
    SyncDue,
    Stop,
}

/// The writer thread's state: the file and the encoded bytes not yet written to it.
struct Sink {
    path: PathBuf,
    /// `None` after an I/O error: the next attempt reopens the file (it may have been removed).
    file: Option<File>,
    /// Encoded JSON lines not yet written; a failed write leaves its unwritten tail here.
    pending: Vec<u8>,
    /// Bytes were written since the last successful `sync_data`.
    unsynced: bool,
    last_sync: Instant,
    failures: Arc<AtomicU64>,
}

impl Sink {
    fn run(mut self, rx: &Receiver<CallRecord>, stop: &Receiver<()>) {
        loop {
            if self.pending.is_empty() {
                match self.wait(rx, stop) {
                    Wake::Record(rec) => {
                        self.encode(&rec);
                        // Let records gather: while this thread sleeps, workers queue records
                        // without waking it (a blocked receiver costs each sender a futex wake).
                        std::thread::sleep(GATHER);
                        self.fill_batch(rx);
                    }
                    Wake::SyncDue => {}
                    Wake::Stop => break,
                }
            } else {
                // Backing off after an I/O error; queued records wait in the bounded channel.
                match stop.recv_timeout(RETRY_INTERVAL) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            if self.write_pending().is_ok() && self.last_sync.elapsed() >= SYNC_INTERVAL {
                self.sync();
            }
        }
        self.drain(rx);
    }

    /// Blocks until a record arrives, a pending fsync falls due, or shutdown is asked for.
    fn wait(&self, rx: &Receiver<CallRecord>, stop: &Receiver<()>) -> Wake {
        let record = |msg: Result<CallRecord, _>| match msg {
            Ok(rec) => Wake::Record(rec),
            // Every sender is gone: nothing more can arrive.
            Err(_) => Wake::Stop,
        };
        if self.unsynced {
            let due = (self.last_sync + SYNC_INTERVAL).saturating_duration_since(Instant::now());
            crossbeam_channel::select! {
                recv(rx) -> msg => record(msg),
                recv(stop) -> _ => Wake::Stop,
                default(due) => Wake::SyncDue,
            }
        } else {
            crossbeam_channel::select! {
                recv(rx) -> msg => record(msg),
                recv(stop) -> _ => Wake::Stop,
            }
        }
    }

    /// Encodes whatever else is already queued, up to [`MAX_BATCH`] records in all.
    fn fill_batch(&mut self, rx: &Receiver<CallRecord>) -> usize {
        let mut taken = 0;
        while taken < MAX_BATCH {
            match rx.try_recv() {
                Ok(rec) => {
                    self.encode(&rec);
                    taken += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        taken
    }

    fn encode(&mut self, rec: &CallRecord) {
        let mark = self.pending.len();
        match serde_json::to_writer(&mut self.pending, rec) {
            Ok(()) => self.pending.push(b'\n'),
            Err(err) => {
                self.pending.truncate(mark);
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %self.path.display(), call = %rec.id, error = %err,
                    "cannot encode CDR; record dropped");
            }
        }
    }

    /// Writes `pending` to the file; on error keeps the unwritten tail and drops the file
    /// handle so the next attempt reopens it.
    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.try_write_pending();
        if let Err(err) = &result {
            self.file = None;
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(path = %self.path.display(), error = %err,
                pending_bytes = self.pending.len(), "cannot write CDRs; will retry");
        }
        result
    }

    fn try_write_pending(&mut self) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(open_append(&self.path)?),
        };
        // `write` rather than `write_all`, so that a failure mid-batch knows how much of the
        // batch reached the file and a retry neither loses nor repeats bytes.
        let mut written = 0;
        let result = loop {
            if written == self.pending.len() {
                break Ok(());
            }
            match file.write(&self.pending[written..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.unsynced = true;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => break Err(err),
            }
        };
        self.pending.drain(..written);
        result
    }

    /// `sync_data`s what was written. The file is written unbuffered, so there is nothing to
    /// flush first. A failure is logged and retried at the next interval.
    fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        self.last_sync = Instant::now();
        let Some(file) = &self.file else { return };
        match file.sync_data() {
            Ok(()) => self.unsynced = false,
            Err(err) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %self.path.display(), error = %err,
                    "cannot fsync CDR file; will retry");
            }
        }
    }

    /// Shutdown: writes everything still queued and fsyncs. A write that keeps failing is
    /// given up after [`SHUTDOWN_ATTEMPTS`], and the records lost are logged.
    fn drain(&mut self, rx: &Receiver<CallRecord>) {
        loop {
            let taken = self.fill_batch(rx);
            if self.pending.is_empty() && taken == 0 {
                break;
            }
            let mut attempt = 1;
            while self.write_pending().is_err() {
                if attempt == SHUTDOWN_ATTEMPTS {
                    let lost_lines = self.pending.iter().filter(|&&b| b == b'\n').count()
                        + rx.try_iter().count();
                    tracing::error!(path = %self.path.display(), records = lost_lines,
                        "giving up on CDRs at shutdown; records lost");
                    self.pending.clear();
                    self.sync();
                    return;
                }
                attempt += 1;
                std::thread::sleep(SHUTDOWN_RETRY_PAUSE);
            }
        }
        self.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn record(id: &str) -> CallRecord {
        CallRecord {
            id: id.to_string(),
            direction: Direction::Termination,
            tenant: Some("acme".into()),
            account: "alice@pbx.example.com".into(),
            from: "+15551230000".into(),
            to: "+4930123456".into(),
            start: 1_795_467_840_000,
            answer: Some(1_795_467_845_123),
            end: 1_795_467_905_623,
            duration_s: duration_s(Some(1_795_467_845_123), 1_795_467_905_623),
            final_code: 200,
            end_reason: EndReason::CallerBye,
            a_packets: 3000,
            a_bytes: 516_000,
            b_packets: 2990,
            b_bytes: 514_280,
            media_block: None,
        }
    }

    fn read_lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Days from 1970-01-01 to a proleptic Gregorian date (Hinnant's `days_from_civil`), the
    /// inverse the formatter is checked against.
    fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y / 400;
        let yoe = y % 400;
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    fn is_leap(year: u64) -> bool {
        year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
    }

    #[test]
    fn formats_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1, "1970-01-01T00:00:00.001Z"),
            (86_399_999, "1970-01-01T23:59:59.999Z"),
            (68_214_896_789, "1972-02-29T12:34:56.789Z"),
            (946_684_799_999, "1999-12-31T23:59:59.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
            (1_795_467_845_123, "2026-11-23T21:04:05.123Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (u64::MAX, "9999-12-31T23:59:59.999Z"),
        ];
        for (unix_ms, want) in cases {
            assert_eq!(Rfc3339Ms::from_unix_ms(unix_ms).as_str(), want, "{unix_ms}");
        }
        assert_eq!(
            Rfc3339Ms::from_unix_ms(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn civil_from_days_walks_every_day_to_9999() {
        let (mut year, mut month, mut day) = (1970, 1, 1);
        let last = days_from_civil(9999, 12, 31);
        for days in 0..=last {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            assert_eq!(days_from_civil(year, month, day), days);
            let month_len = match month {
                2 if is_leap(year) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > month_len {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }

    #[test]
    fn duration_is_talk_time() {
        assert_eq!(duration_s(None, 5000), 0.0);
        assert_eq!(duration_s(Some(1000), 61_500), 60.5);
        assert_eq!(duration_s(Some(2000), 1000), 0.0);
    }

    #[test]
    fn json_has_spec_names_and_shapes() {
        let line = serde_json::to_string(&record("c1")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let obj = v.as_object().unwrap();
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        let mut want = vec![
            "id",
            "direction",
            "tenant",
            "account",
            "from",
            "to",
            "start",
            "answer",
            "end",
            "duration_s",
            "final_code",
            "end_reason",
            "a_packets",
            "a_bytes",
            "b_packets",
            "b_bytes",
        ];
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);

        assert_eq!(v["id"], "c1");
        assert_eq!(v["direction"], "termination");
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["account"], "alice@pbx.example.com");
        assert_eq!(v["from"], "+15551230000");
        assert_eq!(v["to"], "+4930123456");
        assert_eq!(v["start"], "2026-11-23T21:04:00.000Z");
        assert_eq!(v["answer"], "2026-11-23T21:04:05.123Z");
        assert_eq!(v["end"], "2026-11-23T21:05:05.623Z");
        assert_eq!(v["duration_s"].as_f64(), Some(60.5));
        assert_eq!(v["final_code"].as_u64(), Some(200));
        assert_eq!(v["end_reason"], "caller_bye");
        assert_eq!(v["a_packets"].as_u64(), Some(3000));
        assert_eq!(v["a_bytes"].as_u64(), Some(516_000));
        assert_eq!(v["b_packets"].as_u64(), Some(2990));
        assert_eq!(v["b_bytes"].as_u64(), Some(514_280));
        assert!(!line.contains('\n'));

        // An origination attempt that was never answered and has no tenant.
        let mut rec = record("c2");
        rec.direction = Direction::Origination;
        rec.tenant = None;
        rec.answer = None;
        rec.duration_s = duration_s(None, rec.end);
        rec.final_code = 486;
        rec.end_reason = EndReason::Failed;
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["direction"], "origination");
        assert!(v["tenant"].is_null());
        assert!(v["answer"].is_null());
        assert_eq!(v["duration_s"].as_f64(), Some(0.0));
        assert_eq!(v["final_code"].as_u64(), Some(486));
    }

    #[test]
    fn end_reasons_are_snake_case() {
        let cases = [
            (EndReason::CallerBye, "caller_bye"),
            (EndReason::CalleeBye, "callee_bye"),
            (EndReason::Cancel, "cancel"),
            (EndReason::Rejected, "rejected"),
            (EndReason::Failed, "failed"),
            (EndReason::MediaTimeout, "media_timeout"),
            (EndReason::Admin, "admin"),
            (EndReason::Shutdown, "shutdown"),
        ];
        for (reason, want) in cases {
            assert_eq!(serde_json::to_value(reason).unwrap(), want);
        }
    }

    #[test]
    fn record_reaches_the_file_within_one_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/cdr.jsonl");
        let (writer, sender) = CdrWriter::spawn(&path).unwrap();
        let sent = Instant::now();
        sender.send(record("fast")).unwrap();
        loop {
            let lines = read_lines(&path);
            if let Some(line) = lines.first() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["id"], "fast");
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(1),
                "CDR not on disk within 1 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        writer.shutdown();
    }

    #[test]
    fn ten_thousand_records_from_four_threads_survive_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let (writer, sender) = CdrWriter::spawn(&path).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    for i in 0..2500 {
                        assert!(sender.send(record(&format!("t{t}-{i}"))).is_ok());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        writer.shutdown();
        assert!(
            sender.send(record("late")).is_err(),
            "closed writer accepts records"
        );

        let lines = read_lines(&path);
        assert_eq!(lines.len(), 10_000);
        let ids: HashSet<String> = lines
            .iter()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                v["id"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn appends_to_existing_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        std::fs::write(&path, "{\"id\":\"old\"}\n").unwrap();
        for id in ["first", "second"] {
            let (writer, sender) = CdrWriter::spawn(&path).unwrap();
            sender.send(record(id)).unwrap();
            drop(writer); // Drop drains like shutdown.
        }
        let ids: Vec<String> = read_lines(&path)
            .iter()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                v["id"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(ids, ["old", "first", "second"]);
    }

    #[test]
    fn unopenable_path_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("cdr.jsonl");
        let err = CdrWriter::spawn(&path).unwrap_err();
        assert!(matches!(err, CdrError::Open { .. }));
        let msg = err.to_string();
        assert!(msg.starts_with("cannot open CDR file "), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn write_errors_are_counted_and_shutdown_still_returns() {
        let path = Path::new("/dev/full");
        if !path.exists() {
            return;
        }
        let (writer, sender) = CdrWriter::spawn(path).unwrap();
        sender.send(record("doomed")).unwrap();
        let sent = Instant::now();
        while writer.failures() == 0 {
            assert!(
                sent.elapsed() < Duration::from_secs(2),
                "write error not counted"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let stopping = Instant::now();
        writer.shutdown();
        assert!(stopping.elapsed() < Duration::from_secs(2));
    }
}
