//! The state directory: what a restarted agent needs to rejoin by itself and to be
//! recognised by its peers at once.
//!
//! - `incarnation`: our last incarnation; a restart starts above it, so our announcement
//!   beats whatever the cluster remembers of us (`left`, `failed`).
//! - `members.json`: last-known members, so a restart rejoins with no seed reachable.
//! - `reset-key`: the QUIC stateless-reset key; with the same key, peers' stale connections
//!   to our previous process are reset within milliseconds instead of lingering.
//!
//! Files are written to a temporary name and renamed, so a crash never leaves half a file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::core::{KnownMember, MemberInfo};
use crate::wire::Blob;
use crate::wire::{Incarnation, NodeName, Software, State, Tags};

/// A state-directory failure, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("state directory: {path}: {source}")]
pub struct StateError {
    /// The file or folder.
    pub path: PathBuf,
    /// What went wrong.
    pub source: std::io::Error,
}

/// An opened state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct SavedMember {
    name: String,
    addr: std::net::SocketAddr,
    incarnation: u64,
    state: String,
    #[serde(default)]
    tags: Tags,
    /// Without them a restored member would show passing until its incarnation rises.
    #[serde(default)]
    failing: Vec<String>,
    #[serde(default)]
    maintenance: Option<String>,
    #[serde(with = "crate::model::software_fields", default)]
    software: Option<Software>,
    /// The member's signature over this statement (base64), so that it can be passed on
    /// after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proof: Option<String>,
    /// Its certificate chain (base64 of the DER certificates), to check and pass on its
    /// signatures after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credential: Option<String>,
}

/// `maintenance.json`: we are in maintenance, for this reason.
#[derive(Serialize, Deserialize)]
struct SavedMaintenance {
    reason: String,
}

impl StateDir {
    /// Creates the directory (mode 0700) if needed.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        let err = |source| StateError {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(err)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        let err = |source| StateError {
            path: path.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        file.write_all(bytes).map_err(err)?;
        file.sync_all().map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)?;
        // The rename is durable only once the directory entry is.
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), StateError> {
        fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| StateError {
                path: self.dir.clone(),
                source,
            })
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError { path, source }),
        }
    }

    /// The incarnation saved last, if any.
    pub fn incarnation(&self) -> Result<Option<Incarnation>, StateError> {
        let Some(bytes) = self.read("incarnation")? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        text.trim()
            .parse::<u64>()
            .map(|n| Some(Incarnation(n)))
            .map_err(|e| StateError {
                path: self.path("incarnation"),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a number: {e}"),
                ),
            })
    }

    /// Saves our incarnation.
    pub fn save_incarnation(&self, incarnation: Incarnation) -> Result<(), StateError> {
        self.write("incarnation", format!("{}\n", incarnation.0).as_bytes())
    }

    /// The stateless-reset key, created on first use. A key of the wrong length is an error:
    /// something else wrote the file, and replacing a secret silently hides that.
    pub fn reset_key(&self) -> Result<[u8; 32], StateError> {
        if let Some(bytes) = self.read("reset-key")? {
            return <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| StateError {
                path: self.path("reset-key"),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} bytes, expected 32 (remove the file and a new key is made; peers' \
                         connections to the old process then wait out their idle timeout)",
                        bytes.len()
                    ),
                ),
            });
        }
        let key = random_bytes::<32>().map_err(|source| StateError {
            path: self.path("reset-key"),
            source,
        })?;
        self.write("reset-key", &key)?;
        Ok(key)
    }

    /// Our maintenance reason, if `swimd maint on` was the last word before a restart.
    pub fn maintenance(&self) -> Result<Option<String>, StateError> {
        let Some(bytes) = self.read("maintenance.json")? else {
            return Ok(None);
        };
        serde_json::from_slice::<SavedMaintenance>(&bytes)
            .map(|m| Some(m.reason))
            .map_err(|e| StateError {
                path: self.path("maintenance.json"),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })
    }

    /// Saves (`Some`) or removes (`None`) our maintenance reason.
    pub fn save_maintenance(&self, maintenance: Option<&str>) -> Result<(), StateError> {
        match maintenance {
            Some(reason) => {
                let saved = SavedMaintenance {
                    reason: reason.to_string(),
                };
                let json = serde_json::to_vec(&saved).map_err(|e| StateError {
                    path: self.path("maintenance.json"),
                    source: std::io::Error::other(e),
                })?;
                self.write("maintenance.json", &json)
            }
            None => {
                let path = self.path("maintenance.json");
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(source) => return Err(StateError { path, source }),
                }
                self.sync_dir()
            }
        }
    }

    /// Last-known members. The file is only a cache: a missing one gives none, and a corrupt
    /// one is set aside as `members.json.corrupt` with a warning (seeds still work).
    pub fn members(&self) -> Result<Vec<KnownMember>, StateError> {
        let Some(bytes) = self.read("members.json")? else {
            return Ok(Vec::new());
        };
        let saved: Vec<SavedMember> = match serde_json::from_slice(&bytes) {
            Ok(saved) => saved,
            Err(e) => {
                let path = self.path("members.json");
                let aside = self.path("members.json.corrupt");
                fs::rename(&path, &aside).map_err(|source| StateError {
                    path: path.clone(),
                    source,
                })?;
                tracing::warn!(path = %path.display(), moved_to = %aside.display(), error = %e,
                    "last-known members unreadable: starting without them");
                return Ok(Vec::new());
            }
        };
        Ok(saved
            .into_iter()
            .filter(|m| NodeName::validate(&m.name).is_ok())
            .filter_map(|m| {
                let state: State = m.state.parse().ok()?;
                let info = MemberInfo::new(NodeName::new(&m.name), m.addr, m.tags)
                    .with_failing(m.failing)
                    .with_maintenance(m.maintenance)
                    .with_software(m.software);
                let blob =
                    |b64: Option<String>| b64.and_then(|b| BASE64.decode(b).ok()).map(Blob::from);
                Some(KnownMember {
                    proof: blob(m.proof),
                    credential: blob(m.credential),
                    ..KnownMember::new(Arc::new(info), Incarnation(m.incarnation), state)
                })
            })
            .collect())
    }

    /// Saves the members (ourselves excluded by the caller or not: restore skips us).
    pub fn save_members(&self, members: &[KnownMember]) -> Result<(), StateError> {
        self.write_members(&saved_members(members))
    }

    fn write_members(&self, saved: &[SavedMember]) -> Result<(), StateError> {
        let json = serde_json::to_vec(saved).map_err(|e| StateError {
            path: self.path("members.json"),
            source: std::io::Error::other(e),
        })?;
        self.write("members.json", &json)
    }
}

/// What the [`StateWriter`]'s thread has yet to write: only the newest of each, so it is
/// bounded however slow the disk.
#[derive(Default)]
struct Pending {
    incarnation: Option<Incarnation>,
    members: Option<Vec<SavedMember>>,
    /// `Some(None)`: out of maintenance.
    maintenance: Option<Option<String>>,
    closed: bool,
}

/// Writes state files on a thread of its own, so the SWIM loop never waits on an fsync.
/// A save replaces one of its kind not yet written. Failures are logged there (the next
/// save tries again).
pub struct StateWriter {
    pending: Arc<(Mutex<Pending>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StateWriter {
    /// Starts the writer thread for `dir`.
    pub fn start(dir: StateDir) -> std::io::Result<StateWriter> {
        let pending: Arc<(Mutex<Pending>, Condvar)> = Arc::default();
        let shared = pending.clone();
        let thread = std::thread::Builder::new()
            .name("swimd-state".into())
            .spawn(move || {
                let (lock, wake) = &*shared;
                loop {
                    let (incarnation, members, maintenance, closed) = {
                        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
                        while p.incarnation.is_none()
                            && p.members.is_none()
                            && p.maintenance.is_none()
                            && !p.closed
                        {
                            p = wake.wait(p).unwrap_or_else(|e| e.into_inner());
                        }
                        (
                            p.incarnation.take(),
                            p.members.take(),
                            p.maintenance.take(),
                            p.closed,
                        )
                    };
                    let results = [
                        maintenance.map(|m| dir.save_maintenance(m.as_deref())),
                        incarnation.map(|i| dir.save_incarnation(i)),
                        members.map(|m| dir.write_members(&m)),
                    ];
                    for e in results.into_iter().flatten().filter_map(Result::err) {
                        tracing::error!(error = %e, "cannot save state");
                    }
                    if closed {
                        return;
                    }
                }
            })?;
        Ok(StateWriter {
            pending,
            thread: Some(thread),
        })
    }

    fn update(&self, change: impl FnOnce(&mut Pending)) {
        let (lock, wake) = &*self.pending;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        if !p.closed {
            change(&mut p);
            wake.notify_one();
        }
    }

    /// Queues our incarnation for saving.
    pub fn save_incarnation(&self, incarnation: Incarnation) {
        self.update(|p| p.incarnation = Some(incarnation));
    }

    /// Queues our maintenance reason (or its removal) for saving.
    pub fn save_maintenance(&self, maintenance: Option<String>) {
        self.update(|p| p.maintenance = Some(maintenance));
    }

    /// Queues the members for saving (ourselves excluded by the caller or not: restore
    /// skips us).
    pub fn save_members(&self, members: &[KnownMember]) {
        let saved = saved_members(members);
        self.update(|p| p.members = Some(saved));
    }

    /// Waits until everything queued is on disk; later saves are ignored.
    pub async fn close(&mut self) {
        self.update(|p| p.closed = true);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn saved_members(members: &[KnownMember]) -> Vec<SavedMember> {
    members
        .iter()
        .map(|m| SavedMember {
            name: m.info.name.to_string(),
            addr: m.info.addr,
            incarnation: m.incarnation.0,
            state: m.state.as_str().to_string(),
            tags: m.info.tags.clone(),
            failing: m.info.failing.clone(),
            maintenance: m.info.maintenance.clone(),
            software: m.info.software.clone(),
            proof: m.proof.as_ref().map(|p| BASE64.encode(p.as_bytes())),
            credential: m.credential.as_ref().map(|c| BASE64.encode(c.as_bytes())),
        })
        .collect()
}

/// Bytes from the operating system's secure RNG.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| std::io::Error::other("the system random number generator failed"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("swimd-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn incarnation_members_and_reset_key_survive_reopening() {
        let dir = temp_dir("roundtrip");
        let state = StateDir::open(&dir).unwrap();
        assert_eq!(state.incarnation().unwrap(), None);
        state.save_incarnation(Incarnation(7)).unwrap();
        let key = state.reset_key().unwrap();
        let info = Arc::new(MemberInfo::new(
            NodeName::new("n1"),
            "10.0.0.1:7946".parse().unwrap(),
            Tags::new(),
        ));
        let known = KnownMember {
            proof: Some(Blob::from(vec![7; 72])),
            credential: Some(Blob::from(vec![8; 480])),
            ..KnownMember::new(info, Incarnation(3), State::Alive)
        };
        state.save_members(std::slice::from_ref(&known)).unwrap();

        let again = StateDir::open(&dir).unwrap();
        assert_eq!(again.incarnation().unwrap(), Some(Incarnation(7)));
        assert_eq!(again.reset_key().unwrap(), key);
        assert_eq!(again.members().unwrap(), vec![known]);
        let mode = fs::metadata(dir.join("reset-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_member_cache_is_set_aside_and_a_wrong_length_reset_key_is_an_error() {
        let dir = temp_dir("cache");
        let state = StateDir::open(&dir).unwrap();
        fs::write(dir.join("members.json"), "[{\"name\": tru").unwrap();
        assert!(state.members().unwrap().is_empty());
        assert!(!dir.join("members.json").exists());
        assert_eq!(
            fs::read_to_string(dir.join("members.json.corrupt")).unwrap(),
            "[{\"name\": tru"
        );

        fs::write(dir.join("reset-key"), [1u8; 17]).unwrap();
        let err = state.reset_key().unwrap_err().to_string();
        assert!(
            err.contains("reset-key") && err.contains("17 bytes, expected 32"),
            "{err}"
        );
        assert_eq!(fs::read(dir.join("reset-key")).unwrap(), [1u8; 17]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_writer_thread_saves_the_newest_of_each_and_close_waits_for_it() {
        let dir = temp_dir("writer");
        let state = StateDir::open(&dir).unwrap();
        let mut writer = StateWriter::start(state.clone()).unwrap();
        let view = |name: &str, incarnation: u64| {
            let info = MemberInfo::new(
                NodeName::new(name),
                "10.0.0.1:7946".parse().unwrap(),
                Tags::new(),
            );
            KnownMember::new(Arc::new(info), Incarnation(incarnation), State::Alive)
        };
        for i in 1..=50 {
            writer.save_incarnation(Incarnation(i));
            writer.save_members(&[view("n1", i), view("n2", i)]);
        }
        writer.close().await;
        writer.save_incarnation(Incarnation(99));
        assert_eq!(state.incarnation().unwrap(), Some(Incarnation(50)));
        let members = state.members().unwrap();
        assert_eq!(members.len(), 2);
        assert!(members.iter().all(|m| m.incarnation == Incarnation(50)));
        assert!(!dir.join(".members.json.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_files_are_reported_with_their_path() {
        let dir = temp_dir("corrupt");
        let state = StateDir::open(&dir).unwrap();
        fs::write(dir.join("incarnation"), "seven").unwrap();
        let err = state.incarnation().unwrap_err().to_string();
        assert!(
            err.contains("incarnation") && err.contains("not a number"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
