//! Change activity a source can report to the cost planner (`backhaul profile`, `backhaul cost`).
//!
//! Billing of managed loaders depends on how a table changes, not only on its size: Fivetran
//! counts distinct keys touched per month, Airbyte the records synced. A source that can answer
//! these questions cheaply (from a change log, an audit table, its own statistics, or because it
//! knows it is append-only) implements [`crate::connector::Source::activity`]. The default
//! answers `None`; the planner then estimates from a sample read with `extract`, or reports
//! upper bounds and why.

use serde::{Deserialize, Serialize};

use crate::cursor::CursorRange;

/// A half-open time window `[from, to)` in microseconds since the epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeWindow {
    /// Inclusive start.
    pub from: i64,
    /// Exclusive end.
    pub to: i64,
}

/// Columns that date a row's changes, as named in the cost config. Each is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeColumns {
    /// Set once when the row is inserted.
    pub created_at: Option<String>,
    /// Set on every change of the row (its last-modified time).
    pub updated_at: Option<String>,
    /// Soft-delete marker: a timestamp/date set on deletion, or a boolean flag.
    pub soft_delete: Option<String>,
}

/// What the planner asks a source about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityQuery {
    /// The job's cursor range: the rows the job loads, taken as "the table".
    pub range: CursorRange,
    /// The window to count changes in (the planner's steady month).
    pub window: TimeWindow,
    /// Change columns named by the user, if any.
    pub columns: ChangeColumns,
}

/// A count and whether it is exact (counted or known by construction) or estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// The count.
    pub value: u64,
    /// `true` when counted or known by construction; `false` for statistics or samples.
    pub exact: bool,
}

impl Counted {
    /// An exact count.
    pub fn exact(value: u64) -> Self {
        Counted { value, exact: true }
    }

    /// An estimate.
    pub fn estimate(value: u64) -> Self {
        Counted { value, exact: false }
    }
}

/// A source's answer about one window. `None` fields are unknown to the source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Rows inserted in the window.
    pub inserts: Option<Counted>,
    /// Distinct pre-existing keys updated in the window (each key once however often updated).
    pub updated_keys: Option<Counted>,
    /// Distinct keys deleted in the window (hard or soft).
    pub deleted_keys: Option<Counted>,
    /// Distinct keys inserted, updated or deleted in the window, each counted once. For a table
    /// without a primary key: distinct row versions (a hash of all values) created or removed,
    /// which is how Fivetran keys such tables. `None`: the planner combines the three above.
    pub touched_keys: Option<Counted>,
    /// How the source got these numbers, for the report (e.g. "append-only by construction").
    pub method: String,
}
