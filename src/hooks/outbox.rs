//! The durable outbox: every delivery accepted is in `hooks.redb` in the state directory
//! until it succeeds or goes to the dead letters, so a SIGKILL or a restart loses nothing.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::payload::HookEvent;

const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");

/// Most deliveries pending at once, all hooks together; more are refused (counted `lost`).
pub const MAX_PENDING: usize = 10_000;
/// Most dead letters kept; burying more drops the oldest.
pub const MAX_DEAD: usize = 1_000;

/// One delivery of one event to one hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Outbox order (per agent, increasing).
    pub seq: u64,
    /// The hook's name.
    pub hook: String,
    /// The event.
    pub event: HookEvent,
    /// Cluster hooks: the note to gossip once handled.
    pub confirm: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix milliseconds before which no attempt is made.
    pub next_at_ms: u64,
    /// Why the last attempt failed.
    pub last_error: String,
}

/// The outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("hook outbox {path}: {message}")]
pub struct OutboxError {
    path: PathBuf,
    message: String,
}

impl OutboxError {
    /// An error about the outbox in `dir`.
    pub fn new(dir: &Path, message: String) -> OutboxError {
        OutboxError {
            path: dir.join("hooks.redb"),
            message,
        }
    }
}

/// The outbox: pending deliveries and dead letters.
pub struct Outbox {
    /// Opened at once if the file exists, else created by the first write: an agent with
    /// no hooks leaves no database behind.
    db: std::sync::OnceLock<Database>,
    path: PathBuf,
    next_seq: u64,
    max_dead: usize,
}

impl Outbox {
    /// Opens `dir/hooks.redb` if it exists; the first delivery creates it (mode 0600).
    pub fn open(dir: &Path) -> Result<Outbox, OutboxError> {
        let path = dir.join("hooks.redb");
        let mut outbox = Outbox {
            db: std::sync::OnceLock::new(),
            path,
            next_seq: 1,
            max_dead: MAX_DEAD,
        };
        if !outbox.path.exists() {
            return Ok(outbox);
        }
        outbox.database()?;
        let last = outbox
            .all(PENDING)?
            .into_iter()
            .chain(outbox.all(DEAD)?)
            .map(|d| d.seq)
            .max()
            .unwrap_or(0);
        outbox.next_seq = last + 1;
        Ok(outbox)
    }

    /// The database, opened or created (with both tables) on first use.
    fn database(&self) -> Result<&Database, OutboxError> {
        if let Some(db) = self.db.get() {
            return Ok(db);
        }
        // Deliveries carry member data: only the agent's user may read them.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| self.error(e))?;
        let db = Database::builder()
            // Deliveries are few and small: a big page cache would only cost resident memory.
            .set_cache_size(1 << 20)
            .create(&self.path)
            .map_err(|e| self.error(e))?;
        let txn = db.begin_write().map_err(|e| self.error(e))?;
        {
            // Create both tables so readers never meet a missing one.
            txn.open_table(PENDING).map_err(|e| self.error(e))?;
            txn.open_table(DEAD).map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))?;
        Ok(self.db.get_or_init(|| db))
    }

    fn error(&self, e: impl std::fmt::Display) -> OutboxError {
        OutboxError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Accepts a delivery; once this returns, it survives a crash.
    pub fn push(
        &mut self,
        hook: &str,
        event: HookEvent,
        confirm: Option<String>,
        now_ms: u64,
    ) -> Result<Delivery, OutboxError> {
        let delivery = Delivery {
            seq: self.next_seq,
            hook: hook.to_string(),
            event,
            confirm,
            attempts: 0,
            next_at_ms: now_ms,
            last_error: String::new(),
        };
        self.write(|pending, _| {
            pending.insert(delivery.seq, encode(&delivery).as_slice())?;
            Ok(())
        })?;
        self.next_seq += 1;
        Ok(delivery)
    }

    /// Records a failed attempt (attempts, next time, error).
    pub fn update(&self, delivery: &Delivery) -> Result<(), OutboxError> {
        self.write(|pending, _| {
            pending.insert(delivery.seq, encode(delivery).as_slice())?;
            Ok(())
        })
    }

    /// Removes a delivered event.
    pub fn remove(&self, seq: u64) -> Result<(), OutboxError> {
        self.write(|pending, _| {
            pending.remove(seq)?;
            Ok(())
        })
    }

    /// Moves a delivery to the dead letters; beyond [`MAX_DEAD`], the oldest are dropped.
    pub fn bury(&self, delivery: &Delivery) -> Result<(), OutboxError> {
        let mut dropped = 0;
        self.write(|pending, dead| {
            pending.remove(delivery.seq)?;
            dead.insert(delivery.seq, encode(delivery).as_slice())?;
            while dead.len()? > self.max_dead as u64 {
                dead.pop_first()?;
                dropped += 1;
            }
            Ok(())
        })?;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                max = self.max_dead,
                "too many dead letters: the oldest were dropped (`swimd hooks replay` sends \
                 the rest again)"
            );
        }
        Ok(())
    }

    /// Moves dead letters (of one hook, or all) back to pending, attempts reset.
    pub fn replay(&self, hook: Option<&str>, now_ms: u64) -> Result<Vec<Delivery>, OutboxError> {
        let chosen: Vec<Delivery> = self
            .all(DEAD)?
            .into_iter()
            .filter(|d| hook.is_none_or(|h| d.hook == h))
            .map(|d| Delivery {
                attempts: 0,
                next_at_ms: now_ms,
                last_error: String::new(),
                ..d
            })
            .collect();
        self.write(|pending, dead| {
            for d in &chosen {
                dead.remove(d.seq)?;
                pending.insert(d.seq, encode(d).as_slice())?;
            }
            Ok(())
        })?;
        Ok(chosen)
    }

    /// Every pending delivery, oldest first.
    pub fn pending(&self) -> Result<Vec<Delivery>, OutboxError> {
        self.all(PENDING)
    }

    /// Every dead letter, oldest first.
    pub fn dead(&self) -> Result<Vec<Delivery>, OutboxError> {
        self.all(DEAD)
    }

    fn all(&self, table: TableDefinition<u64, &[u8]>) -> Result<Vec<Delivery>, OutboxError> {
        let Some(db) = self.db.get() else {
            return Ok(Vec::new());
        };
        let txn = db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(table).map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (seq, bytes) = entry.map_err(|e| self.error(e))?;
            match serde_json::from_slice::<Delivery>(bytes.value()) {
                Ok(d) => out.push(d),
                // A record this build cannot read stays where it is, for a newer build.
                Err(e) => {
                    tracing::error!(seq = seq.value(), error = %e, "unreadable outbox record skipped")
                }
            }
        }
        Ok(out)
    }

    fn write(
        &self,
        change: impl FnOnce(
            &mut redb::Table<u64, &[u8]>,
            &mut redb::Table<u64, &[u8]>,
        ) -> Result<(), redb::StorageError>,
    ) -> Result<(), OutboxError> {
        let txn = self.database()?.begin_write().map_err(|e| self.error(e))?;
        {
            let mut pending = txn.open_table(PENDING).map_err(|e| self.error(e))?;
            let mut dead = txn.open_table(DEAD).map_err(|e| self.error(e))?;
            change(&mut pending, &mut dead).map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))
    }
}

fn encode(delivery: &Delivery) -> Vec<u8> {
    serde_json::to_vec(delivery).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::payload::PayloadMember;

    fn event(name: &str) -> HookEvent {
        HookEvent::new(
            "member.failed",
            1.0,
            "c",
            PayloadMember::sample(name, 1),
            None,
            "me",
        )
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("swimd-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_database_exists_only_once_a_delivery_was_accepted_and_only_its_owner_reads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("lazy");
        let mut outbox = Outbox::open(&dir).unwrap();
        assert!(outbox.pending().unwrap().is_empty());
        assert!(!dir.join("hooks.redb").exists());
        outbox.push("lb", event("a"), None, 5).unwrap();
        let mode = std::fs::metadata(dir.join("hooks.redb"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(outbox);
        assert_eq!(Outbox::open(&dir).unwrap().pending().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dead_letters_beyond_the_cap_drop_the_oldest() {
        let dir = temp_dir("cap");
        let mut outbox = Outbox::open(&dir).unwrap();
        outbox.max_dead = 3;
        for name in ["a", "b", "c", "d", "e"] {
            let d = outbox.push("lb", event(name), None, 5).unwrap();
            outbox.bury(&d).unwrap();
        }
        let kept: Vec<String> = outbox
            .dead()
            .unwrap()
            .into_iter()
            .map(|d| d.event.data.member.name)
            .collect();
        assert_eq!(kept, ["c", "d", "e"]);
        assert!(outbox.pending().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn deliveries_survive_reopening_and_move_between_lists() {
        let dir = temp_dir("reopen");
        {
            let mut outbox = Outbox::open(&dir).unwrap();
            let a = outbox.push("lb", event("a"), None, 5).unwrap();
            let b = outbox.push("lb", event("b"), Some("k".into()), 5).unwrap();
            assert_eq!((a.seq, b.seq), (1, 2));
            let mut retried = b.clone();
            retried.attempts = 3;
            retried.last_error = "HTTP 503".into();
            outbox.update(&retried).unwrap();
            outbox.bury(&a).unwrap();
        }
        let mut outbox = Outbox::open(&dir).unwrap();
        let pending = outbox.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].attempts, 3);
        assert_eq!(pending[0].confirm.as_deref(), Some("k"));
        assert_eq!(outbox.dead().unwrap().len(), 1);
        assert_eq!(
            outbox.push("lb", event("c"), None, 5).unwrap().seq,
            3,
            "seq continues"
        );
        let replayed = outbox.replay(Some("lb"), 9).unwrap();
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].attempts, 0);
        assert!(outbox.dead().unwrap().is_empty());
        assert_eq!(outbox.pending().unwrap().len(), 3);
        outbox.remove(2).unwrap();
        assert_eq!(
            outbox
                .pending()
                .unwrap()
                .iter()
                .map(|d| d.seq)
                .collect::<Vec<_>>(),
            vec![1, 3]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
