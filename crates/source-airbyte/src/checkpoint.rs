//! The checkpoint of an un-windowed stream's chunk: the connector's last STATE together with
//! every record it emitted before that STATE.
//!
//! A chunk commits atomically and a retried chunk replaces its files, so a resumed chunk must
//! produce *all* its rows again. Passing `--state` alone would lose the rows before the state;
//! re-reading from the start would throw the state away. So the records are kept too: each
//! RECORD is appended to `records.jsonl`, and at each STATE the file is synced and
//! `checkpoint.json` (the state and the length of `records.jsonl` it covers) is replaced by an
//! atomic rename. A resumed chunk replays the covered records, truncates the rest (the
//! connector emits them again after the state), and runs `read --state`.
//!
//! One directory per stream, chunk range and spec (`<state_dir>/<stream>-<hash>`), locked while
//! a run uses it: a second attempt of the same chunk on the same machine waits its turn as a
//! transient failure rather than interleaving records.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use backhaul_core::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `checkpoint.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    /// Bytes of `records.jsonl` the state covers.
    records_bytes: u64,
    /// Records in those bytes.
    records: u64,
    /// The `--state` input: a legacy state object, or the array of the latest per-stream (or
    /// the global) state messages.
    state: Value,
}

/// A chunk's checkpoint directory, locked for one run.
pub struct Checkpoint {
    dir: PathBuf,
    _lock: File,
    records: BufWriter<File>,
    records_bytes: u64,
    records_count: u64,
    states: States,
}

/// Where a run starts.
pub struct Resume {
    /// Records emitted before the saved state, replayed before the connector runs.
    pub replay: Option<BufReader<std::io::Take<File>>>,
    /// Records in `replay`.
    pub replay_records: u64,
    /// The `--state` input, when there is a saved state.
    pub state: Option<Value>,
}

impl Checkpoint {
    /// Opens (creating) `<root>/<name>`, locks it, and says where the run resumes.
    pub fn open(root: &Path, name: &str) -> Result<(Checkpoint, Resume)> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(Error::Unreachable {
                system: format!("airbyte checkpoint {}", dir.display()),
                message: "another attempt of this chunk is running on this machine".into(),
            });
        }
        let saved_path = dir.join("checkpoint.json");
        let saved: Option<Saved> = match std::fs::read(&saved_path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes).map_err(|e| Error::State(format!("{}: {e}", saved_path.display())))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&saved_path, e)),
        };
        let records_path = dir.join("records.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&records_path)
            .map_err(|e| Error::io(&records_path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&records_path, e))?.len();
        let saved = match saved {
            Some(s) if s.records_bytes <= len => Some(s),
            Some(s) => {
                tracing::warn!(dir = %dir.display(), expected = s.records_bytes, found = len, "checkpoint records are shorter than recorded; starting the stream over");
                None
            }
            None => None,
        };
        let (bytes, count, state) = match saved {
            Some(s) => (s.records_bytes, s.records, Some(s.state)),
            None => (0, 0, None),
        };
        // Records after the state are emitted again by the connector.
        file.set_len(bytes).map_err(|e| Error::io(&records_path, e))?;
        let replay = if bytes > 0 {
            let mut reader = File::open(&records_path).map_err(|e| Error::io(&records_path, e))?;
            reader
                .seek(SeekFrom::Start(0))
                .map_err(|e| Error::io(&records_path, e))?;
            Some(BufReader::new(reader.take(bytes)))
        } else {
            None
        };
        let states = States::from_input(state.as_ref());
        Ok((
            Checkpoint {
                dir,
                _lock: lock,
                records: BufWriter::new(file),
                records_bytes: bytes,
                records_count: count,
                states,
            },
            Resume {
                replay,
                replay_records: count,
                state,
            },
        ))
    }

    /// Appends one record's data.
    pub fn record(&mut self, data: &str) -> Result<()> {
        let path = || self.dir.join("records.jsonl");
        self.records
            .write_all(data.as_bytes())
            .map_err(|e| Error::io(path(), e))?;
        self.records.write_all(b"\n").map_err(|e| Error::io(path(), e))?;
        self.records_bytes += data.len() as u64 + 1;
        self.records_count += 1;
        Ok(())
    }

    /// Saves `state` (a STATE message's `state`) as covering every record appended so far.
    pub fn state(&mut self, state: Value) -> Result<()> {
        self.states.update(state);
        let records_path = self.dir.join("records.jsonl");
        self.records.flush().map_err(|e| Error::io(&records_path, e))?;
        self.records
            .get_ref()
            .sync_data()
            .map_err(|e| Error::io(&records_path, e))?;
        let saved = Saved {
            records_bytes: self.records_bytes,
            records: self.records_count,
            state: self.states.input(),
        };
        let tmp = self.dir.join("checkpoint.json.tmp");
        let text = serde_json::to_vec(&saved).expect("JSON values serialize");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()
        };
        write().map_err(|e| Error::io(&tmp, e))?;
        let path = self.dir.join("checkpoint.json");
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(&self.dir, e))
    }
}

/// Reads replayed records one line at a time.
pub fn next_replayed(reader: &mut BufReader<std::io::Take<File>>, line: &mut String) -> Result<bool> {
    line.clear();
    let n = reader
        .read_line(line)
        .map_err(|e| Error::State(format!("replaying checkpoint records: {e}")))?;
    Ok(n > 0)
}

/// The latest state of each stream (or the global, or legacy, state).
enum States {
    Legacy(Value),
    Messages(Vec<(String, Value)>),
}

impl States {
    fn from_input(input: Option<&Value>) -> States {
        match input {
            Some(Value::Array(messages)) => {
                States::Messages(messages.iter().map(|m| (state_key(m), m.clone())).collect())
            }
            Some(legacy) => States::Legacy(legacy.clone()),
            None => States::Messages(Vec::new()),
        }
    }

    fn update(&mut self, state: Value) {
        let typed = state.get("type").and_then(Value::as_str).is_some_and(|t| t != "LEGACY");
        if !typed {
            *self = States::Legacy(state.get("data").cloned().unwrap_or(Value::Null));
            return;
        }
        let key = state_key(&state);
        match self {
            States::Messages(messages) => match messages.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = state,
                None => messages.push((key, state)),
            },
            States::Legacy(_) => *self = States::Messages(vec![(key, state)]),
        }
    }

    fn input(&self) -> Value {
        match self {
            States::Legacy(data) => data.clone(),
            States::Messages(messages) => Value::Array(messages.iter().map(|(_, m)| m.clone()).collect()),
        }
    }
}

/// What a state message replaces: the global state, or one stream's.
fn state_key(message: &Value) -> String {
    match message.get("type").and_then(Value::as_str) {
        Some("STREAM") => message
            .pointer("/stream/stream_descriptor")
            .map(Value::to_string)
            .unwrap_or_default(),
        other => other.unwrap_or("LEGACY").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resume_replays_records_before_the_last_state_only() {
        let root = tempfile::tempdir().unwrap();
        {
            let (mut c, resume) = Checkpoint::open(root.path(), "users-1").unwrap();
            assert!(resume.state.is_none() && resume.replay.is_none());
            // A second run of the same chunk is refused while this one holds the lock.
            let e = Checkpoint::open(root.path(), "users-1").err().unwrap();
            assert_eq!(e.class(), backhaul_core::ErrorClass::Transient);
            c.record(r#"{"id":1}"#).unwrap();
            c.record(r#"{"id":2}"#).unwrap();
            let s = |n: i64| json!({"type": "STREAM", "stream": {"stream_descriptor": {"name": "users"}, "stream_state": {"n": n}}});
            c.state(s(2)).unwrap();
            c.record(r#"{"id":3}"#).unwrap();
            c.state(s(3)).unwrap();
            // Emitted after the last state: lost with the crash, emitted again on resume.
            c.record(r#"{"id":4}"#).unwrap();
        }
        let (_c, mut resume) = Checkpoint::open(root.path(), "users-1").unwrap();
        assert_eq!(resume.replay_records, 3);
        assert_eq!(
            resume.state.unwrap(),
            json!([{"type": "STREAM", "stream": {"stream_descriptor": {"name": "users"}, "stream_state": {"n": 3}}}])
        );
        let mut lines = Vec::new();
        let mut line = String::new();
        let reader = resume.replay.as_mut().unwrap();
        while next_replayed(reader, &mut line).unwrap() {
            lines.push(line.trim_end().to_string());
        }
        assert_eq!(lines, [r#"{"id":1}"#, r#"{"id":2}"#, r#"{"id":3}"#]);
    }

    #[test]
    fn legacy_state_is_handed_back_as_its_data() {
        let mut s = States::from_input(None);
        s.update(json!({"data": {"cursor": "2024"}}));
        assert_eq!(s.input(), json!({"cursor": "2024"}));
        s.update(json!({"type": "GLOBAL", "global": {"shared_state": 1}}));
        s.update(json!({"type": "GLOBAL", "global": {"shared_state": 2}}));
        assert_eq!(s.input(), json!([{"type": "GLOBAL", "global": {"shared_state": 2}}]));
    }
}
