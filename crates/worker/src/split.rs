//! Cutting the unread tail off a running chunk when other workers wait.
//!
//! The writer's feed and the lease keeper share one [`Bounds`] under a lock. The feed drops
//! each batch's rows at or above the chunk's current end and notes the highest cursor it
//! passed on; the keeper, told by the coordinator that workers wait, picks a split point above
//! that value and asks the coordinator while it holds the lock. So no batch reaches the writer
//! between choosing the point and narrowing the range, and every row the writer got stays in
//! the part the chunk keeps. This is correct in any row order; it pays only when rows arrive
//! roughly in cursor order (the highest value passed on then tracks progress), and the point
//! is chosen only when the rows seen so far predict a tail worth a chunk of its own.

use arrow::array::{BooleanArray, RecordBatch};
use backhaul_core::Error;
use backhaul_core::cursor::CursorRange;
use backhaul_core::deletes::cursor_values;

/// What the feed and the lease keeper of one running chunk share.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// The range the chunk owns now: the lease's, or less after a split.
    pub range: CursorRange,
    /// The lease's range.
    leased: CursorRange,
    /// The highest cursor value passed on to the writer so far.
    pub highest: Option<i64>,
    /// Rows passed on to the writer so far.
    pub rows: u64,
    /// `chunking.split_min_rows`: the least rows a tail must be expected to hold; 0 never.
    pub split_min_rows: u64,
    /// The source's rows have all been passed on: the range is final.
    closed: bool,
    /// Split points are rounded to a multiple of this where one fits (`CursorKind::granularity`).
    granularity: i64,
}

impl Bounds {
    /// A chunk about to start.
    pub fn new(range: CursorRange, split_min_rows: u64) -> Self {
        Bounds {
            range,
            leased: range,
            highest: None,
            rows: 0,
            split_min_rows,
            closed: false,
            granularity: 1,
        }
    }

    /// Rounds split points to multiples of `granularity` where one fits between the rows
    /// passed on and the end (whole seconds for timestamps, as planned boundaries are).
    pub fn with_granularity(mut self, granularity: i64) -> Self {
        self.granularity = granularity.max(1);
        self
    }

    /// Makes the range final: every row has been passed on, so no split may follow.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Keeps the rows of `batch` inside the current range (only a split narrows it; rows
    /// outside the lease's own range are the source's to avoid) and notes what passed.
    pub fn admit(&mut self, batch: RecordBatch, cursor: usize) -> Result<RecordBatch, Error> {
        let values = cursor_values(batch.column(cursor))?;
        let end = self.range.to;
        let narrowed = end < self.leased.to;
        let batch = if narrowed && values.iter().flatten().any(|v| *v >= end) {
            // A NULL cursor belongs to no range: such rows stay where the source put them.
            let keep: BooleanArray = values.iter().map(|v| Some(v.is_none_or(|v| v < end))).collect();
            arrow::compute::filter_record_batch(&batch, &keep)?
        } else {
            batch
        };
        let highest = values.iter().flatten().copied().filter(|v| *v < end).max();
        self.highest = self.highest.max(highest);
        self.rows += batch.num_rows() as u64;
        Ok(batch)
    }

    /// Where to cut the chunk, if the rows seen so far predict a tail worth a chunk: halfway
    /// between the value above the highest passed on and the end, when the rows per cursor
    /// unit seen so far, carried over that half, reach `split_min_rows`.
    pub fn split_point(&self) -> Option<i64> {
        if self.split_min_rows == 0 || self.rows == 0 || self.closed {
            return None;
        }
        let range = self.range;
        let next = self.highest?.saturating_add(1).max(range.from);
        let (passed, left) = (next - range.from, range.to - next);
        if passed <= 0 || left < 2 {
            return None;
        }
        // Rounded down where that stays above every row passed on, else up, else not at all.
        let middle = next + left / 2;
        let down = middle.div_euclid(self.granularity) * self.granularity;
        let up = down + self.granularity;
        let at = if down >= next {
            down
        } else if up < range.to {
            up
        } else {
            middle
        };
        let tail_rows = u128::from(self.rows) * (range.to - at) as u128 / passed as u128;
        (tail_rows >= u128::from(self.split_min_rows)).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(ids: &[Option<i64>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        let text: Vec<String> = ids.iter().map(|i| format!("{i:?}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from_iter_values(text)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_in_cursor_order_predict_a_tail_and_the_point_lies_above_every_row_passed_on() {
        let mut b = Bounds::new(CursorRange::new(0, 1000), 300);
        assert_eq!(b.split_point(), None, "nothing seen, nothing predicted");
        let ids: Vec<Option<i64>> = (0..100).map(Some).collect();
        b.admit(batch(&ids), 0).unwrap();
        // 100 rows over [0, 100): the tail [550, 1000) should hold about 450 rows.
        assert_eq!(b.split_point(), Some(550));
        b.split_min_rows = 451;
        assert_eq!(b.split_point(), None, "a tail below the minimum is not worth a chunk");
        b.split_min_rows = 0;
        assert_eq!(b.split_point(), None, "0 never splits");
        b.split_min_rows = 300;
        b.close();
        assert_eq!(b.split_point(), None, "every row passed on: nothing left to cut");
    }

    #[test]
    fn split_points_are_rounded_to_the_granularity_where_one_fits() {
        let second = 1_000_000;
        let mut b = Bounds::new(CursorRange::new(0, 10 * second), 1).with_granularity(second);
        b.admit(batch(&[Some(1), Some(2)]), 0).unwrap();
        assert_eq!(b.split_point(), Some(5 * second));
        // Rounding down would fall among the rows passed on: up instead.
        let mut b = Bounds::new(CursorRange::new(0, 5 * second / 2), 1).with_granularity(second);
        let ids: Vec<Option<i64>> = (0..=10).map(|i| Some(i * 120_000)).collect();
        b.admit(batch(&ids), 0).unwrap();
        assert_eq!(b.split_point(), Some(2 * second), "the middle, 1.85 s, rounds up");
        // No whole second between the rows passed on and the end: the middle itself.
        let mut b = Bounds::new(CursorRange::new(0, second / 2), 1).with_granularity(second);
        b.admit(batch(&[Some(1)]), 0).unwrap();
        assert_eq!(b.split_point(), Some(2 + (second / 2 - 2) / 2));
    }

    #[test]
    fn rows_in_no_order_soon_leave_nothing_to_cut() {
        let mut b = Bounds::new(CursorRange::new(0, 1000), 1);
        b.admit(batch(&[Some(998), Some(3), Some(500)]), 0).unwrap();
        assert_eq!(b.split_point(), None);
    }

    #[test]
    fn after_a_split_rows_at_or_above_the_new_end_are_dropped_and_nulls_kept() {
        let mut b = Bounds::new(CursorRange::new(0, 1000), 1);
        b.range.to = 10;
        let kept = b
            .admit(batch(&[Some(3), Some(10), None, Some(9), Some(700)]), 0)
            .unwrap();
        let ids = kept.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.iter().collect::<Vec<_>>(), vec![Some(3), None, Some(9)]);
        assert_eq!(b.rows, 3);
        assert_eq!(b.highest, Some(9));
        // Rows wholly inside pass untouched.
        let same = b.admit(batch(&[Some(1), Some(2)]), 0).unwrap();
        assert_eq!(same.num_rows(), 2);
    }
}
