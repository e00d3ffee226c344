//! The embedded store's audit journal: the durable record of the audit chain, with the
//! `audit_events` table as its index.
//!
//! A commit to SQLite costs pages, not bytes: a group of five 600-byte events rewrote about
//! 20 KiB of write-ahead log (BENCHMARKS.md, session 18). The chain's writer instead appends
//! each batch to a segment file as canonical lines, one `write` a batch, and answers once it
//! returns: the bytes are then in the kernel's page cache, which a `kill -9` of the gateway
//! does not lose (the durability `synchronous=NORMAL` gave; a power loss may lose the last
//! ones, as before). An indexer thread copies the lines' rows into `audit_events` in large
//! transactions behind it, and a segment whose rows are all indexed is removed.
//!
//! Everything that reads the table first indexes what is pending ([`Journal::index_pending`]),
//! and every process that opens the store indexes what a stopped gateway left in the
//! journal ([`recover`]): queries, exports and `audit verify` see every acknowledged event.
//!
//! A line is `<seq> <canonical event>\n`: the event's canonical JSON is exactly the bytes its
//! `event_hash` is the sha256 of, so recovery recomputes the hash and checks each line links
//! to the one before; a line that does not is refused, never indexed.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use super::StoreError;
use super::audit::{AuditAppend, AuditRow, IndexRow, index_rows};
use super::sql::Db;

/// A segment past this size is closed and a new one begun at the next append.
const SEGMENT_BYTES: u64 = 16 << 20;
/// Rows the indexer writes in one transaction: long enough to spread the commit's page
/// writes over many events, short enough that other writers wait at most about a millisecond.
const INDEX_BATCH: usize = 256;
/// How long appended rows may wait for the indexer when fewer than a batch are pending.
const INDEX_EVERY: Duration = Duration::from_millis(20);
/// Most rows waiting for the index (their memory): past it, appends are refused until the
/// indexer catches up, as the writer refuses events when its queue is full.
const MAX_PENDING: usize = 64 * 1024;

/// The journal's directory beside the SQLite file `db`: `openport.db` → `openport.db-audit`.
pub(super) fn dir_of(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push("-audit");
    db.with_file_name(name)
}

/// One process's journal, the chain writer's: it appends, indexes and removes segments.
pub(crate) struct Journal {
    dir: PathBuf,
    /// The chain writer's own connection: the indexer's writes never wait on the request
    /// path's connection.
    db: Arc<Db>,
    node: String,
    appender: Mutex<Appender>,
    /// Appended rows not yet in the index, in chain order.
    pending: Mutex<VecDeque<IndexRow>>,
    /// Wakes the indexer early when a batch is pending.
    wake: Condvar,
    /// Held while rows move from `pending` to the index, so they land in chain order.
    indexing: Mutex<()>,
    /// Keeps another gateway process from writing (and removing) this journal.
    _lock: File,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

struct Appender {
    /// The segment being written, and its length.
    file: Option<(File, u64)>,
    /// Segments not yet removed, oldest first: `(first seq, path)`.
    segments: VecDeque<(i64, PathBuf)>,
    /// The chain's head: the last appended row's position and hash.
    head: Option<(i64, String)>,
    /// Set when a failed append could not be undone: the segment's end is unknown, so
    /// nothing more is appended to it (fail closed until a restart recovers it).
    broken: Option<String>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Journal {
    /// Takes the journal at `dir` for this process: indexes what it holds, removes its
    /// segments, and starts the indexer. Refused while another process holds it.
    pub(super) fn open(dir: &Path, db: Arc<Db>, node: &str) -> Result<Arc<Journal>, StoreError> {
        fs::create_dir_all(dir).map_err(|e| journal_error(dir, &e))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|e| journal_error(dir, &e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Journal(format!(
                    "{}: another gateway process writes this store's audit journal; one process per data directory",
                    dir.display()
                )));
            }
            // A file system without locks: refused rather than unguarded.
            Err(std::fs::TryLockError::Error(e)) => return Err(journal_error(&dir.join("lock"), &e)),
        }
        recover(dir, &db, node)?;
        for (_, path) in segments(dir)? {
            fs::remove_file(&path).map_err(|e| journal_error(&path, &e))?;
        }
        let head = db.read(|conn| super::audit::head(conn, node))?;
        let journal = Arc::new(Journal {
            dir: dir.to_path_buf(),
            db,
            node: node.to_string(),
            appender: Mutex::new(Appender {
                file: None,
                segments: VecDeque::new(),
                head,
                broken: None,
            }),
            pending: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            indexing: Mutex::new(()),
            _lock: lock,
        });
        let weak = Arc::downgrade(&journal);
        std::thread::Builder::new()
            .name("audit-indexer".into())
            .spawn(move || index_behind(&weak))
            .map_err(|e| StoreError::Thread(e.to_string()))?;
        Ok(journal)
    }

    /// The chain's head: the last appended event's position and hash.
    pub(super) fn head(&self) -> Option<(i64, String)> {
        locked(&self.appender).head.clone()
    }

    /// Continues the chain from `head`: after a retention cut wrote its checkpoint event to
    /// the table directly (with everything appended before it indexed).
    pub(super) fn reset_head(&self, head: Option<(i64, String)>) {
        locked(&self.appender).head = head;
    }

    /// Appends `rows` (already chained after the head) in one write, numbering them from
    /// the head on; the last one's position. Durable against a crash of the process when
    /// this returns; on an error nothing of them is in the journal.
    pub(super) fn append(&self, rows: Vec<AuditAppend>) -> Result<i64, StoreError> {
        let mut appender = locked(&self.appender);
        if let Some(why) = &appender.broken {
            return Err(StoreError::Journal(why.clone()));
        }
        let waiting = locked(&self.pending).len();
        if waiting >= MAX_PENDING {
            return Err(StoreError::Journal(format!(
                "{waiting} events wait for the audit index (is the database writable?); refusing more until it catches up"
            )));
        }
        let mut seq = appender.head.as_ref().map_or(0, |(seq, _)| *seq);
        let mut lines = Vec::with_capacity(rows.iter().map(|r| r.canonical.len() + 24).sum());
        let mut numbered = Vec::with_capacity(rows.len());
        for mut append in rows {
            seq += 1;
            append.row.seq = seq;
            lines.extend_from_slice(seq.to_string().as_bytes());
            lines.push(b' ');
            lines.extend_from_slice(append.canonical.as_bytes());
            lines.push(b'\n');
            numbered.push(append);
        }
        let Some(last) = numbered.last() else {
            return Ok(seq);
        };
        let head = (seq, last.row.event_hash.clone());
        let first = seq + 1 - numbered.len() as i64;
        let (file, len) = self.segment_for(&mut appender, first)?;
        if let Err(e) = file.write_all_at(&lines, *len) {
            // Undo a partial write, or the next append would follow a torn line.
            let undone = file.set_len(*len);
            if let Err(undo) = undone {
                appender.broken = Some(format!(
                    "{}: an append failed ({e}) and could not be undone ({undo}); restart to recover the journal",
                    self.dir.display()
                ));
            }
            return Err(journal_error(&self.dir, &e));
        }
        *len += lines.len() as u64;
        appender.head = Some(head);
        drop(appender);
        let packed: Vec<IndexRow> = numbered.iter().map(IndexRow::pack).collect();
        // The rows themselves are freed here, on the thread that made them.
        drop(numbered);
        let mut pending = locked(&self.pending);
        pending.extend(packed);
        if pending.len() >= INDEX_BATCH {
            self.wake.notify_one();
        }
        Ok(seq)
    }

    /// The segment to append rows from `first` on: the current one, or a new one once it
    /// passed [`SEGMENT_BYTES`].
    fn segment_for<'a>(&self, appender: &'a mut Appender, first: i64) -> Result<&'a mut (File, u64), StoreError> {
        if appender.file.as_ref().is_some_and(|(_, len)| *len >= SEGMENT_BYTES) {
            appender.file = None;
        }
        if appender.file.is_none() {
            let path = self.dir.join(format!("{first:020}.log"));
            let file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)
                .map_err(|e| journal_error(&path, &e))?;
            // Sized once (sparse): an append then never changes the file's size, which
            // made each write a metadata update of the file system's own journal.
            file.set_len(SEGMENT_BYTES).map_err(|e| journal_error(&path, &e))?;
            appender.segments.push_back((first, path));
            return Ok(appender.file.insert((file, 0)));
        }
        appender
            .file
            .as_mut()
            .ok_or_else(|| StoreError::Journal("no segment is open".into()))
    }

    /// Indexes every row appended so far: after this, the table holds every acknowledged
    /// event. Called before anything reads the table.
    pub(crate) fn index_pending(&self) -> Result<(), StoreError> {
        let _indexing = locked(&self.indexing);
        loop {
            let batch: Vec<IndexRow> = {
                let mut pending = locked(&self.pending);
                let take = pending.len().min(INDEX_BATCH);
                pending.drain(..take).collect()
            };
            let Some(last) = batch.last().map(|row| row.seq) else {
                break;
            };
            if let Err(e) = self.db.own_rows(|conn| index_rows(conn, &self.node, &batch)) {
                // Put back in front, in order: the next try indexes them first.
                let mut pending = locked(&self.pending);
                for row in batch.into_iter().rev() {
                    pending.push_front(row);
                }
                return Err(e);
            }
            self.remove_indexed_segments(last);
        }
        Ok(())
    }

    /// Indexes everything appended and removes every segment, the open one too: after a
    /// clean stop the database alone holds the chain (a copy or backup of it is complete,
    /// and rows deleted from it are not restored by the next start). The next append
    /// begins a new segment. The caller holds the chain, so nothing is appended meanwhile.
    pub(super) fn settle(&self) -> Result<(), StoreError> {
        self.index_pending()?;
        let mut appender = locked(&self.appender);
        if !locked(&self.pending).is_empty() {
            return Ok(());
        }
        appender.file = None;
        for (_, path) in appender.segments.drain(..) {
            fs::remove_file(&path).map_err(|e| journal_error(&path, &e))?;
        }
        Ok(())
    }

    /// Removes the closed segments whose every row is at or before `indexed`.
    fn remove_indexed_segments(&self, indexed: i64) {
        let mut appender = locked(&self.appender);
        while appender.segments.len() > 1 && appender.segments[1].0 <= indexed + 1 {
            let Some((_, path)) = appender.segments.pop_front() else {
                break;
            };
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(error = %e, path = %path.display(), "indexed audit journal segment not removed");
            }
        }
    }
}

impl Drop for Journal {
    /// A gateway that stops indexes what is pending; what a crash leaves is recovered.
    fn drop(&mut self) {
        if let Err(e) = self.settle() {
            tracing::error!(error = %e, "audit journal not indexed at shutdown; the next start recovers it");
        }
    }
}

/// The indexer thread: indexes pending rows every [`INDEX_EVERY`], or at once when a batch
/// is pending, until the journal is dropped.
fn index_behind(journal: &Weak<Journal>) {
    loop {
        let Some(journal) = journal.upgrade() else { return };
        {
            let pending = locked(&journal.pending);
            if pending.len() < INDEX_BATCH {
                let _ = journal
                    .wake
                    .wait_timeout(pending, INDEX_EVERY)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        if let Err(e) = journal.index_pending() {
            tracing::error!(error = %e, "audit journal rows not indexed; retrying");
            std::thread::sleep(INDEX_EVERY);
        }
    }
}

/// The journal's segment files, oldest first: `(first seq, path)`.
fn segments(dir: &Path) -> Result<Vec<(i64, PathBuf)>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(journal_error(dir, &e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| journal_error(dir, &e))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<i64>().ok());
        if let Some(first) = first {
            found.push((first, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Indexes the rows the journal at `dir` holds past the table's head, checking that each
/// line links to the one before. Any process that opens the store runs it; the gateway
/// that owns the journal then removes the segments.
pub(super) fn recover(dir: &Path, db: &Db, node: &str) -> Result<usize, StoreError> {
    let found = segments(dir)?;
    if found.is_empty() {
        return Ok(0);
    }
    let mut head = db.read(|conn| super::audit::head(conn, node))?;
    let mut batch = Vec::new();
    let mut recovered = 0;
    let last_segment = found.len() - 1;
    for (index, (_, path)) in found.iter().enumerate() {
        let file = match File::open(path) {
            Ok(file) => file,
            // Indexed and removed by the gateway since the listing: the table goes on
            // from where it ended.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let table = db.read(|conn| super::audit::head(conn, node))?;
                if table.as_ref().map(|(seq, _)| *seq) > head.as_ref().map(|(seq, _)| *seq) {
                    head = table;
                }
                continue;
            }
            Err(e) => return Err(journal_error(path, &e)),
        };
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut number = 0;
        loop {
            // The end, or the unwritten rest of a segment sized in advance (not read: it
            // may be 16 MiB of zeros).
            let next = reader.fill_buf().map_err(|e| journal_error(path, &e))?;
            if next.first().is_none_or(|b| *b == 0) {
                break;
            }
            line.clear();
            reader
                .read_until(b'\n', &mut line)
                .map_err(|e| journal_error(path, &e))?;
            number += 1;
            if line.last() != Some(&b'\n') {
                // A line cut short was being written when the process stopped: its event
                // was never acknowledged. Only the newest segment's last line can be one.
                if index == last_segment {
                    break;
                }
                return Err(bad_line(path, number, "is cut short"));
            }
            let Some(append) = parse_line(&line[..line.len() - 1]) else {
                return Err(bad_line(path, number, "is not `<seq> <canonical event>`"));
            };
            let seq = append.row.seq;
            if head.as_ref().is_some_and(|(at, _)| seq <= *at) {
                continue;
            }
            // Into an empty table the first line goes as it is: `audit verify` checks the
            // chain's start.
            let continues = head
                .as_ref()
                .is_none_or(|(at, hash)| seq == at + 1 && append.row.prev_event_hash == *hash);
            if !continues {
                return Err(bad_line(path, number, "does not continue the chain the database holds"));
            }
            head = Some((seq, append.row.event_hash.clone()));
            batch.push(IndexRow::pack(&append));
            if batch.len() == INDEX_BATCH {
                recovered += batch.len();
                db.own_rows(|conn| index_rows(conn, node, &batch))?;
                batch.clear();
            }
        }
    }
    if !batch.is_empty() {
        recovered += batch.len();
        db.own_rows(|conn| index_rows(conn, node, &batch))?;
    }
    if recovered > 0 {
        tracing::info!(events = recovered, dir = %dir.display(), "audit journal recovered into the index");
    }
    Ok(recovered)
}

/// A journal line's row: `<seq> <canonical event>`, its hash the sha256 of the event.
fn parse_line(line: &[u8]) -> Option<AuditAppend> {
    let space = line.iter().position(|b| *b == b' ')?;
    let seq: i64 = std::str::from_utf8(&line[..space]).ok()?.parse().ok()?;
    let canonical = std::str::from_utf8(&line[space + 1..]).ok()?;
    let mut row: AuditRow = serde_json::from_str(canonical).ok()?;
    row.seq = seq;
    row.event_hash = crate::hashing::sha256_hex(canonical.as_bytes());
    let details = serde_json::to_string(&row.details).ok()?;
    let policy_ids = serde_json::to_string(&row.policy_ids).ok()?;
    Some(AuditAppend {
        row,
        details,
        policy_ids,
        canonical: String::new(),
    })
}

fn bad_line(path: &Path, number: usize, what: &str) -> StoreError {
    StoreError::Journal(format!(
        "{} line {number} {what}; the events before it are indexed. Move the file aside to start \
         without it (`openport audit verify` then reports what is missing)",
        path.display()
    ))
}

fn journal_error(path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Journal(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditLog, assert_intact_with};
    use crate::metrics::AuditWriterMetrics;
    use crate::protocol::codes::SUCCESS;
    use crate::store::{AuditFilter, Store};

    /// The gateway's audit writer on `store`.
    fn writer_on(store: &Store) -> AuditLog {
        AuditLog::start(store.chain_writer("").unwrap(), AuditWriterMetrics::default(), None).unwrap()
    }

    /// Records `n` events through `log`, each answered once durable.
    fn record(log: &AuditLog, n: usize) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            for i in 0..n {
                let mut event = AuditEvent::new("test.event", SUCCESS, "2026-12-02T00:00:00Z".into());
                event.details.insert("n".into(), i.into());
                log.record(event).await.unwrap();
            }
        });
    }

    /// Records `n` events through the gateway's writer on the store at `path`, then returns
    /// the journal's bytes as they were before the store was closed.
    fn journal_after_recording(path: &Path, n: usize) -> Vec<u8> {
        let store = Store::open(path).unwrap();
        record(&writer_on(&store), n);
        let found = segments(&dir_of(path)).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let mut bytes = fs::read(&found[0].1).unwrap();
        // Without the segment's unwritten (sized in advance) rest.
        let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        bytes.truncate(end);
        bytes
    }

    /// A store whose journal holds `bytes` and whose table holds nothing: what a gateway
    /// killed before its indexer ran leaves.
    fn crashed_store_with(journal: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crashed.db");
        drop(Store::open(&path).unwrap());
        fs::create_dir_all(dir_of(&path)).unwrap();
        fs::write(dir_of(&path).join(format!("{:020}.log", 1)), journal).unwrap();
        (dir, path)
    }

    fn events_in(store: &Store) -> usize {
        store
            .audit
            .query(&AuditFilter {
                limit: 1000,
                ..AuditFilter::default()
            })
            .unwrap()
            .len()
    }

    #[test]
    fn every_acknowledged_event_is_in_the_table_once_anything_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("audit.db")).unwrap();
        let log = writer_on(&store);
        for n in 1..=5 {
            record(&log, 1);
            // Read at once, before the indexer's next round: the read indexes first.
            assert_eq!(events_in(&store), n);
        }
    }

    #[test]
    fn an_indexed_row_holds_every_column_the_writer_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("audit.db")).unwrap();
        let log = writer_on(&store);
        let mut event = AuditEvent::new("test.columns", SUCCESS, "2026-12-02T00:00:00Z".into());
        event.org_id = Some("org_1".into());
        event.tool = Some("ledger.list".into());
        event.user_agent = Some("agent/1 (ünïcode)".into());
        event.policy_ids = vec!["allow-reads".into()];
        event.latency_us = Some(42);
        event.details.insert("resultCount".into(), 2.into());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let id = runtime.block_on(log.record(event)).unwrap();

        let rows = store
            .audit
            .query(&AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .unwrap();
        let [row] = rows.as_slice() else {
            panic!("one row, not {rows:?}");
        };
        assert_eq!(row.id, id);
        assert_eq!(row.action, "test.columns");
        assert_eq!(row.org_id.as_deref(), Some("org_1"));
        assert_eq!(row.app_id, None, "an absent column is NULL, not empty text");
        assert_eq!(row.tool.as_deref(), Some("ledger.list"));
        assert_eq!(row.user_agent.as_deref(), Some("agent/1 (ünïcode)"));
        assert_eq!(row.policy_ids, ["allow-reads"]);
        assert_eq!(row.latency_us, Some(42));
        assert_eq!(row.details, serde_json::json!({"resultCount": 2}));
        assert_eq!(row.created_at, "2026-12-02T00:00:00Z");
        assert_intact_with(&store, 1);
    }

    #[test]
    fn a_journal_left_by_a_crash_is_indexed_when_the_store_opens_and_the_chain_verifies() {
        let source = tempfile::tempdir().unwrap();
        let journal = journal_after_recording(&source.path().join("a.db"), 7);
        let (_dir, path) = crashed_store_with(&journal);
        let store = Store::open(&path).unwrap();
        assert_eq!(events_in(&store), 7);
        assert_intact_with(&store, 7);
    }

    #[test]
    fn a_line_cut_short_by_the_crash_was_never_acknowledged_and_is_left_out() {
        let source = tempfile::tempdir().unwrap();
        let journal = journal_after_recording(&source.path().join("a.db"), 3);
        let cut = &journal[..journal.len() - 10];
        let (_dir, path) = crashed_store_with(cut);
        let store = Store::open(&path).unwrap();
        assert_eq!(events_in(&store), 2);
        // The gateway that takes the journal over continues the chain after the last whole line.
        record(&writer_on(&store), 1);
        assert_intact_with(&store, 3);
    }

    #[test]
    fn the_unwritten_rest_of_a_segment_ends_it() {
        let source = tempfile::tempdir().unwrap();
        let mut journal = journal_after_recording(&source.path().join("a.db"), 2);
        journal.extend(std::iter::repeat_n(0u8, 4096));
        let (_dir, path) = crashed_store_with(&journal);
        assert_eq!(events_in(&Store::open(&path).unwrap()), 2);
    }

    #[test]
    fn a_tampered_line_is_refused_never_indexed() {
        let source = tempfile::tempdir().unwrap();
        let journal = String::from_utf8(journal_after_recording(&source.path().join("a.db"), 3)).unwrap();
        // The second event's outcome rewritten: its recomputed hash no longer is the one the
        // third line links to.
        let tampered = journal
            .replacen("\"status\":\"success\"", "\"status\":\"denied\"", 2)
            .replacen("\"status\":\"denied\"", "\"status\":\"success\"", 1);
        assert_ne!(tampered, journal);
        let (_dir, path) = crashed_store_with(tampered.as_bytes());
        let error = Store::open(&path).unwrap_err().to_string();
        assert!(error.contains("line 3 does not continue the chain"), "{error}");
    }

    #[test]
    fn after_a_clean_stop_the_database_alone_holds_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let store = Store::open(&path).unwrap();
        let log = writer_on(&store);
        record(&log, 3);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(log.seal()).unwrap();
        assert!(segments(&dir_of(&path)).unwrap().is_empty());
        drop((log, store));
        // So a row deleted from the table afterwards stays deleted, for `audit verify` to see.
        let db = crate::store::connect(&path).unwrap();
        db.execute("DELETE FROM audit_events WHERE seq = 3", []).unwrap();
        assert_eq!(events_in(&Store::open(&path).unwrap()), 2);
    }

    #[test]
    fn a_second_writer_of_one_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let first = Store::open(&path).unwrap();
        let _writer = first.chain_writer("").unwrap();
        let second = Store::open(&path).unwrap();
        let error = second.chain_writer("").unwrap_err().to_string();
        assert!(error.contains("another gateway process"), "{error}");
    }
}
