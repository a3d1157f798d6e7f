//! One chunk: fetch the window's pages, read records into the declared types, drop the ones
//! whose cursor is outside `[from, to)` (fetched by the lookback or a coarse API filter: they
//! belong to other chunks), keep the last record seen per primary key, send refused records to
//! the dead-letter file, and hand out batches.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use backhaul_core::connector::ExtractNotes;
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::{Error, Result};
use serde_json::value::RawValue;

use crate::columns::{Cell, Column, build_batch};
use crate::jsonpath::JsonPath;
use crate::paginate::{NextPage, PageInfo, Pager};
use crate::request::{Caller, Prepared};
use crate::spec::{HttpSourceSpec, PaginationSpec, WindowLocation};

/// What a chunk needs, shared with its task.
#[derive(Debug)]
pub struct Plan {
    /// The spec.
    pub spec: HttpSourceSpec,
    /// Declared columns, in order.
    pub columns: Vec<Column>,
    /// Their schema.
    pub schema: SchemaRef,
    /// Index of the cursor column.
    pub cursor: usize,
    /// Indexes of the primary-key columns.
    pub keys: Vec<usize>,
    /// The record selector.
    pub selector: JsonPath,
    /// Records refused so far by this source, over all chunks.
    pub dead_letters: AtomicU64,
}

/// One page read: pagination facts and each record, typed or refused.
struct ParsedPage {
    document: serde_json::Value,
    records: Vec<std::result::Result<Vec<Cell>, (String, String)>>,
    last_id: Option<String>,
    first_record: Option<String>,
}

/// A refused record and why.
#[derive(Debug, serde::Serialize)]
struct DeadLetter<'a> {
    stream: &'a str,
    reason: &'a str,
    record: &'a RawValue,
}

impl Plan {
    fn stream_error(&self, message: String) -> Error {
        Error::InvalidObject {
            object: format!("stream `{}`", self.spec.stream.name),
            message,
        }
    }

    /// The first request of a window.
    fn first_request(&self, range: CursorRange, pager: &Pager) -> Result<Prepared> {
        let base = self.spec.base_url.trim_end_matches('/');
        let mut url: reqwest::Url = format!("{base}{}", self.spec.stream.path)
            .parse()
            .map_err(|e| Error::config("source", "source.base_url", format!("{e}")))?;
        let mut body = serde_json::Map::new();
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &self.spec.params {
                q.append_pair(k, v);
            }
            if let Some(w) = &self.spec.window {
                let from = range.from - self.spec.lookback_micros();
                let mut bounds = vec![(w.from_param.clone(), w.format.render(from, false))];
                if let Some(to_param) = &w.to_param {
                    bounds.push((to_param.clone(), w.format.render(range.to, true)));
                }
                for (k, v) in bounds {
                    match w.location {
                        WindowLocation::Query => {
                            q.append_pair(&k, &v);
                        }
                        WindowLocation::Body => {
                            let value = v
                                .parse::<i64>()
                                .map(serde_json::Value::from)
                                .unwrap_or(serde_json::Value::String(v));
                            body.insert(k, value);
                        }
                    }
                }
            }
            for (k, v) in pager.first() {
                q.append_pair(&k, &v);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let post = self
            .spec
            .window
            .as_ref()
            .is_some_and(|w| w.location == WindowLocation::Body);
        Ok(Prepared {
            method: if post {
                reqwest::Method::POST
            } else {
                reqwest::Method::GET
            },
            url,
            headers: self.spec.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            body: post.then(|| serde_json::Value::Object(body).to_string()),
        })
    }

    /// Parses one response body (CPU work: run off the IO runtime).
    fn parse_page(&self, body: &str, path: &str) -> Result<ParsedPage> {
        let document: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| self.stream_error(format!("the response from {path} is not JSON: {e}")))?;
        let selected = self
            .selector
            .select_raw(body)
            .map_err(|e| self.stream_error(format!("the response from {path} is not JSON: {e}")))?;
        let Some(selected) = selected else {
            return Err(self.stream_error(format!(
                "record_selector `{}` matches nothing in the response from {path}",
                self.selector.as_str()
            )));
        };
        let raw_records: Vec<&RawValue> = serde_json::from_str(selected.get()).map_err(|_| {
            self.stream_error(format!(
                "record_selector `{}` selects a JSON {} in the response from {path}, not an array of records",
                self.selector.as_str(),
                selected.get().trim_start().chars().next().map_or("value", |c| match c {
                    '{' => "object",
                    '"' => "string",
                    _ => "scalar",
                })
            ))
        })?;
        let id_field = match &self.spec.pagination {
            Some(PaginationSpec::LastId { id_field, .. }) => Some(id_field.as_str()),
            _ => None,
        };
        let mut last_id = None;
        let records = raw_records
            .iter()
            .map(|raw| {
                let Ok(fields) = serde_json::from_str::<HashMap<String, &RawValue>>(raw.get()) else {
                    return Err((raw.get().to_string(), "the record is not a JSON object".to_string()));
                };
                if let Some(id) = id_field.and_then(|f| fields.get(f)) {
                    last_id = Some(serde_json::from_str::<String>(id.get()).unwrap_or_else(|_| id.get().to_string()));
                } else if id_field.is_some() {
                    last_id = None;
                }
                self.columns
                    .iter()
                    .map(|c| c.read(fields.get(&c.name).copied()))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|reason| (raw.get().to_string(), reason))
            })
            .collect();
        Ok(ParsedPage {
            records,
            last_id,
            first_record: raw_records.first().map(|r| r.get().to_string()),
            document,
        })
    }

    /// The dead-letter file of one window: `<dir>/<job>-<stream>-<from>-<to>.jsonl`
    /// (`<dir>/<stream>-<from>-<to>.jsonl` for a source built outside a job).
    pub fn dead_letter_path(&self, range: CursorRange) -> PathBuf {
        let stamp = |v: i64| {
            CursorKind::Timestamp
                .format(v)
                .replace([':', '-'], "")
                .replace('.', "_")
        };
        let job = self.spec.job_name.as_ref().map(|j| format!("{j}-")).unwrap_or_default();
        self.spec.dead_letter_dir().join(format!(
            "{job}{}-{}-{}.jsonl",
            self.spec.stream.name,
            stamp(range.from),
            stamp(range.to)
        ))
    }

    fn key_of(&self, cells: &[Cell]) -> Option<String> {
        if self.keys.is_empty() {
            return None;
        }
        Some(
            self.keys
                .iter()
                .map(|&i| format!("{:?}", cells[i]))
                .collect::<Vec<_>>()
                .join("\u{1f}"),
        )
    }
}

/// Reads the chunk `range` and sends its batches of at most `batch_rows` rows to `tx`; notes
/// the chunk's dead letters in `notes`.
pub async fn run_chunk(
    plan: Arc<Plan>,
    caller: Arc<Caller>,
    range: CursorRange,
    batch_rows: usize,
    notes: ExtractNotes,
    tx: tokio::sync::mpsc::Sender<Result<RecordBatch>>,
) {
    match read_chunk(&plan, &caller, range, &notes).await {
        Ok(rows) => {
            for piece in rows.chunks(batch_rows.max(1)) {
                let batch = build_batch(&plan.schema, &plan.columns, piece).map_err(Error::from);
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
        }
        Err(e) => {
            let _ = tx.send(Err(e)).await;
        }
    }
}

async fn read_chunk(
    plan: &Arc<Plan>,
    caller: &Caller,
    range: CursorRange,
    notes: &ExtractNotes,
) -> Result<Vec<Vec<Cell>>> {
    let mut pager = Pager::new(plan.spec.pagination.clone(), plan.spec.max_pages);
    let first = plan.first_request(range, &pager)?;
    let mut request = first.clone();
    let mut rows: Vec<Vec<Cell>> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut dead = String::new();
    let mut dead_count = 0u64;
    let mut outside = 0u64;
    loop {
        let response = caller.send(&request).await?;
        let path = request.url.path().to_string();
        let page = {
            let plan = plan.clone();
            let body = response.body;
            let path = path.clone();
            tokio::task::spawn_blocking(move || plan.parse_page(&body, &path))
                .await
                .map_err(|e| Error::Internal(format!("http page parser failed: {e}")))??
        };
        let count = page.records.len();
        for record in page.records {
            match record {
                Ok(cells) => {
                    let cursor = match cells[plan.cursor] {
                        Cell::Micros(v) => v,
                        _ => {
                            dead_count += 1;
                            push_dead(&mut dead, plan, "the cursor field is null", "null");
                            continue;
                        }
                    };
                    if cursor < range.from || cursor >= range.to {
                        outside += 1;
                        continue;
                    }
                    match plan.key_of(&cells) {
                        Some(key) => match by_key.get(&key) {
                            Some(&i) => rows[i] = cells,
                            None => {
                                by_key.insert(key, rows.len());
                                rows.push(cells);
                            }
                        },
                        None => rows.push(cells),
                    }
                }
                Err((raw, reason)) => {
                    dead_count += 1;
                    push_dead(&mut dead, plan, &reason, &raw);
                }
            }
        }
        let info = PageInfo {
            document: &page.document,
            headers: &response.headers,
            url: &request.url,
            records: count,
            last_id: page.last_id,
            first_record: page.first_record,
        };
        match pager.next(&info).map_err(|m| plan.stream_error(m))? {
            NextPage::Done => break,
            NextPage::Url(url) => request.url = url,
            NextPage::Params(params) => {
                request = first.clone();
                let mut pairs: Vec<(String, String)> = first
                    .url
                    .query_pairs()
                    .filter(|(k, _)| !params.iter().any(|(p, _)| p == k))
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                pairs.extend(params);
                request.url.query_pairs_mut().clear().extend_pairs(pairs);
            }
        }
    }
    let path = plan.dead_letter_path(range);
    if dead_count > 0 {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| Error::io(dir, e))?;
        }
        tokio::fs::write(&path, dead).await.map_err(|e| Error::io(&path, e))?;
        plan.dead_letters.fetch_add(dead_count, Ordering::Relaxed);
        notes.add_dead_letters(dead_count);
        tracing::warn!(
            stream = %plan.spec.stream.name,
            dead_letters = dead_count,
            path = %path.display(),
            "records that do not match the declared schema were written to the dead-letter file"
        );
    } else {
        // A retried chunk leaves no stale file of an earlier attempt.
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
            _ => {}
        }
    }
    tracing::debug!(
        stream = %plan.spec.stream.name,
        rows = rows.len(),
        outside_window = outside,
        "chunk fetched"
    );
    Ok(rows)
}

fn push_dead(out: &mut String, plan: &Plan, reason: &str, raw: &str) {
    let fallback;
    let record: &RawValue = match serde_json::from_str(raw) {
        Ok(r) => r,
        Err(_) => {
            fallback = RawValue::from_string("null".into()).expect("null is JSON");
            &fallback
        }
    };
    let line = serde_json::to_string(&DeadLetter {
        stream: &plan.spec.stream.name,
        reason,
        record,
    })
    .expect("a dead letter serializes");
    out.push_str(&line);
    out.push('\n');
}
