//! An in-memory table with a full change history, generated from a seed, served through the
//! `Source` trait: the ground truth the MAR estimator is tested against.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use backhaul_core::Result;
use backhaul_core::chunking::DensityBucket;
use backhaul_core::connector::{BatchStream, ColumnOrigin, Source, TableDescription};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::profile::{Activity, ActivityQuery, Counted};
use backhaul_cost::profiler::{ProfileInput, ProfileOptions};
use futures::future::BoxFuture;

pub const DAY: i64 = 86_400_000_000;
/// 2025-01-01T00:00:00Z.
pub const T0: i64 = 1_735_689_600_000_000;
/// The table's history is one year long; "now" is its end.
pub const NOW: i64 = T0 + 365 * DAY;
pub const WINDOW: (i64, i64) = (NOW - 30 * DAY, NOW);

/// splitmix64.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Insert,
    Update,
    SoftDelete,
    HardDelete,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    pub payload: String,
    /// Gone from the table (hard delete).
    pub gone: bool,
}

/// How the table changes.
#[derive(Debug, Clone, Copy)]
pub struct Pattern {
    pub rows: usize,
    /// Update events over the year, as a multiple of the rows.
    pub updates_per_row: f64,
    /// Share of update events going to the hottest 1% of keys (repeated updates of the same keys).
    pub hot_share: f64,
    /// Share of rows soft-deleted over the year.
    pub soft_deletes: f64,
    /// Whether the table has a primary key.
    pub keyed: bool,
    /// At most one update per row (keyless tables: the estimator counts 2 versions per update).
    pub single_updates: bool,
    pub seed: u64,
}

impl Default for Pattern {
    fn default() -> Self {
        Pattern {
            rows: 120_000,
            updates_per_row: 0.0,
            hot_share: 0.0,
            soft_deletes: 0.0,
            keyed: true,
            single_updates: false,
            seed: 7,
        }
    }
}

/// The table and its history.
pub struct Table {
    pub rows: Vec<Row>,
    pub log: Vec<(i64, i64, Event)>, // (key, time, event)
    pub keyed: bool,
}

impl Table {
    /// Generates a year of history: inserts grow over the year, updates hit random keys
    /// (optionally concentrated on hot keys), some rows are soft-deleted.
    pub fn generate(p: Pattern) -> Table {
        let mut rng = Rng(p.seed);
        let mut rows = Vec::with_capacity(p.rows);
        let mut log = Vec::new();
        for i in 0..p.rows {
            // Volume grows over the year: created_at density rises linearly.
            let x = rng.unit().sqrt();
            let created = T0 + (x * (365 * DAY) as f64) as i64;
            rows.push(Row {
                id: i as i64 + 1,
                created_at: created,
                updated_at: created,
                deleted_at: None,
                payload: format!("payload-{}-{}", i, rng.below(1_000_000)),
                gone: false,
            });
            log.push((i as i64 + 1, created, Event::Insert));
        }
        rows.sort_by_key(|r| r.created_at);
        let updates = (p.rows as f64 * p.updates_per_row) as usize;
        let hot = (p.rows / 100).max(1);
        let mut updated_once = std::collections::HashSet::new();
        for _ in 0..updates {
            let idx = if rng.unit() < p.hot_share {
                p.rows - 1 - rng.below(hot as u64) as usize // the newest rows are hot
            } else {
                rng.below(p.rows as u64) as usize
            };
            if p.single_updates && !updated_once.insert(idx) {
                continue;
            }
            let r = &mut rows[idx];
            let span = (NOW - r.created_at - 1).max(1);
            let t = r.created_at + 1 + rng.below(span as u64) as i64;
            if t > r.updated_at {
                r.updated_at = t;
            }
            log.push((r.id, t, Event::Update));
        }
        let deletes = (p.rows as f64 * p.soft_deletes) as usize;
        for _ in 0..deletes {
            let idx = rng.below(p.rows as u64) as usize;
            let r = &mut rows[idx];
            if r.deleted_at.is_some() {
                continue;
            }
            let t = r.updated_at + 1 + rng.below(((NOW - r.updated_at - 1).max(1)) as u64) as i64;
            r.deleted_at = Some(t);
            r.updated_at = t;
            log.push((r.id, t, Event::SoftDelete));
        }
        Table {
            rows,
            log,
            keyed: p.keyed,
        }
    }

    /// Distinct keys with any event in the window: what Fivetran bills for a keyed table. For a
    /// keyless table, the row versions created or removed in the window.
    pub fn true_mar(&self, window: (i64, i64)) -> u64 {
        let mut per_key: BTreeMap<i64, (bool, u64, bool, bool)> = BTreeMap::new();
        for &(key, t, e) in &self.log {
            if t < window.0 || t >= window.1 {
                continue;
            }
            let entry = per_key.entry(key).or_default();
            match e {
                Event::Insert => entry.0 = true,
                Event::Update => entry.1 += 1,
                Event::SoftDelete => entry.2 = true,
                Event::HardDelete => entry.3 = true,
            }
        }
        if self.keyed {
            return per_key.len() as u64;
        }
        per_key
            .values()
            .map(|&(inserted, updates, soft, hard)| {
                // The inserted (or pre-existing) version, plus one new version per update.
                if inserted || updates > 0 {
                    1 + updates
                } else {
                    u64::from(soft || hard)
                }
            })
            .sum()
    }

    /// Exact answers from the change log, as a source with a full history would give them.
    pub fn activity(&self, window: (i64, i64)) -> Activity {
        let in_w = |t: i64| window.0 <= t && t < window.1;
        let mut inserts = 0;
        let mut updated = std::collections::HashSet::new();
        let mut deleted = std::collections::HashSet::new();
        let mut inserted = std::collections::HashSet::new();
        for &(key, t, e) in &self.log {
            if !in_w(t) {
                continue;
            }
            match e {
                Event::Insert => {
                    inserts += 1;
                    inserted.insert(key);
                }
                Event::Update => {
                    updated.insert(key);
                }
                Event::SoftDelete | Event::HardDelete => {
                    deleted.insert(key);
                }
            }
        }
        let updated_pre = updated.difference(&inserted).count() as u64;
        Activity {
            inserts: Some(Counted::exact(inserts)),
            updated_keys: Some(Counted::exact(updated_pre)),
            deleted_keys: Some(Counted::exact(deleted.len() as u64)),
            touched_keys: Some(Counted::exact(self.true_mar(window))),
            method: "change log (full history)".into(),
        }
    }
}

/// Which columns the served table has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    /// id, created_at, updated_at, deleted_at, payload; cursor created_at.
    All,
    /// id (the cursor), payload: nothing dates a change.
    NoChangeColumns,
}

/// The table served as a `Source`.
pub struct MemorySource {
    pub table: Arc<Mutex<Table>>,
    pub answer_activity: bool,
    pub columns: Columns,
    pub keyed: bool,
}

impl MemorySource {
    pub fn new(table: Table, answer_activity: bool, columns: Columns) -> Self {
        let keyed = table.keyed;
        MemorySource {
            table: Arc::new(Mutex::new(table)),
            answer_activity,
            columns,
            keyed,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Arc::new(match self.columns {
            Columns::All => Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("created_at", ts.clone(), false),
                Field::new("updated_at", ts.clone(), false),
                Field::new("deleted_at", ts, true),
                Field::new("payload", DataType::Utf8, false),
            ]),
            Columns::NoChangeColumns => Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("payload", DataType::Utf8, false),
            ]),
        })
    }

    pub fn description(&self) -> TableDescription {
        let schema = self.schema();
        let (cursor, kind) = match self.columns {
            Columns::All => ("created_at", CursorKind::Timestamp),
            Columns::NoChangeColumns => ("id", CursorKind::Integer),
        };
        TableDescription {
            columns: schema
                .fields()
                .iter()
                .map(|f| ColumnOrigin {
                    name: f.name().clone(),
                    source_type: f.data_type().to_string(),
                    lossy_step: None,
                })
                .collect(),
            schema,
            cursor_column: cursor.into(),
            cursor_kind: kind,
            key_columns: if self.keyed { vec!["id".into()] } else { vec![] },
        }
    }

    pub fn range(&self) -> CursorRange {
        match self.columns {
            Columns::All => CursorRange::new(T0, NOW),
            Columns::NoChangeColumns => {
                let n = self.table.lock().unwrap().rows.len() as i64;
                CursorRange::new(1, n + 1)
            }
        }
    }

    fn cursor_of(&self, r: &Row) -> i64 {
        match self.columns {
            Columns::All => r.created_at,
            Columns::NoChangeColumns => r.id,
        }
    }

    fn batch(&self, rows: &[Row]) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id)));
        let payload: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.payload.as_str())));
        let columns = match self.columns {
            Columns::All => {
                let ts = |v: Vec<Option<i64>>| -> ArrayRef {
                    Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
                };
                vec![
                    ids,
                    ts(rows.iter().map(|r| Some(r.created_at)).collect()),
                    ts(rows.iter().map(|r| Some(r.updated_at)).collect()),
                    ts(rows.iter().map(|r| r.deleted_at).collect()),
                    payload,
                ]
            }
            Columns::NoChangeColumns => vec![ids, payload],
        };
        RecordBatch::try_new(self.schema(), columns).unwrap()
    }
}

impl Source for MemorySource {
    fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
        Box::pin(async move { Ok(self.description()) })
    }

    /// One bucket per day (or per 1,000 ids) with exact counts, like catalog statistics.
    fn density(&self, range: CursorRange) -> BoxFuture<'_, Result<Vec<DensityBucket>>> {
        Box::pin(async move {
            let width = match self.columns {
                Columns::All => DAY,
                Columns::NoChangeColumns => 1_000,
            };
            let table = self.table.lock().unwrap();
            let mut buckets: BTreeMap<i64, f64> = BTreeMap::new();
            for r in table.rows.iter().filter(|r| !r.gone) {
                let c = self.cursor_of(r);
                if range.from <= c && c < range.to {
                    *buckets.entry((c - range.from).div_euclid(width)).or_default() += 1.0;
                }
            }
            Ok(buckets
                .into_iter()
                .map(|(b, rows)| {
                    let from = range.from + b * width;
                    DensityBucket {
                        range: CursorRange::new(from, (from + width).min(range.to)),
                        rows,
                        bytes: rows * 60.0,
                    }
                })
                .collect())
        })
    }

    fn extract(&self, range: CursorRange, batch_rows: usize) -> BoxFuture<'_, Result<BatchStream>> {
        Box::pin(async move {
            let rows: Vec<Row> = {
                let table = self.table.lock().unwrap();
                table
                    .rows
                    .iter()
                    .filter(|r| !r.gone && range.from <= self.cursor_of(r) && self.cursor_of(r) < range.to)
                    .cloned()
                    .collect()
            };
            let batches: Vec<Result<RecordBatch>> = rows.chunks(batch_rows.max(1)).map(|c| Ok(self.batch(c))).collect();
            let stream: BatchStream = Box::pin(futures::stream::iter(batches));
            Ok(stream)
        })
    }

    fn activity(&self, query: ActivityQuery) -> BoxFuture<'_, Result<Option<Activity>>> {
        Box::pin(async move {
            if !self.answer_activity {
                return Ok(None);
            }
            let table = self.table.lock().unwrap();
            Ok(Some(table.activity((query.window.from, query.window.to))))
        })
    }
}

/// Profile options for the generated tables: change columns named, default sampling.
pub fn options(columns: Columns) -> ProfileOptions {
    let mut o = ProfileOptions::from_config(&Default::default(), "test cost config").unwrap();
    if columns == Columns::All {
        o.columns.updated_at = Some("updated_at".into());
        o.columns.soft_delete = Some("deleted_at".into());
    }
    o
}

pub fn input(source: Arc<MemorySource>) -> ProfileInput {
    ProfileInput {
        job: "generated".into(),
        source_kind: "memory".into(),
        table_name: "events".into(),
        table: source.description(),
        range: source.range(),
        chunks: 10,
        file_size: 256 << 20,
        source,
    }
}

pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(NOW).unwrap()
}
