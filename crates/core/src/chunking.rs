//! Cutting a cursor range into chunks, from statistics only.
//!
//! Sources describe how rows are spread over the range with [`DensityBucket`]s taken from
//! catalog statistics (never from counting the table). `plan_chunks` walks them and cuts where
//! the estimated bytes reach the target, assuming rows are spread evenly inside one bucket. The
//! result depends on nothing but its inputs, so the same spec and statistics always give the
//! same chunk boundaries.

use serde::{Deserialize, Serialize};

use crate::cursor::CursorRange;

/// Estimated rows and bytes in one stretch of the cursor range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DensityBucket {
    /// The stretch.
    pub range: CursorRange,
    /// Estimated rows in it.
    pub rows: f64,
    /// Estimated source bytes in it.
    pub bytes: f64,
}

/// How to cut, in cursor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanPolicy {
    /// Every chunk is this wide (the last one may be narrower).
    FixedWidth(i64),
    /// Cut when the estimated bytes reach this many.
    TargetBytes(u64),
}

/// One chunk of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChunk {
    /// Position in the plan, from 0.
    pub index: u64,
    /// Cursor range of the chunk.
    pub range: CursorRange,
    /// Estimated rows.
    pub estimated_rows: u64,
    /// Estimated source bytes.
    pub estimated_bytes: u64,
}

/// Refuse plans that would flood the state store; a spec this fine-grained is a mistake.
pub const MAX_CHUNKS: usize = 1_000_000;

/// Cuts `range` into chunks. `granularity` rounds cut points (1 s for timestamps) so boundaries
/// read well; `density` must be sorted and non-overlapping, and may leave gaps (no rows there).
pub fn plan_chunks(
    range: CursorRange,
    policy: PlanPolicy,
    density: &[DensityBucket],
    granularity: i64,
) -> Result<Vec<PlannedChunk>, String> {
    let granularity = granularity.max(1);
    let bounds = match policy {
        PlanPolicy::FixedWidth(width) => {
            if width <= 0 {
                return Err("chunk width must be positive".into());
            }
            let count = (range.width() as i128 + width as i128 - 1) / width as i128;
            if count as usize > MAX_CHUNKS {
                return Err(format!(
                    "{count} chunks is more than the {MAX_CHUNKS} allowed; use a wider `every`"
                ));
            }
            let mut bounds = Vec::with_capacity(count as usize);
            let mut start = range.from;
            while start < range.to {
                let end = start.saturating_add(width).min(range.to);
                bounds.push(CursorRange::new(start, end));
                start = end;
            }
            bounds
        }
        PlanPolicy::TargetBytes(target) => cut_by_bytes(range, target.max(1) as f64, density, granularity)?,
    };
    Ok(bounds
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let (rows, bytes) = estimate(r, density);
            PlannedChunk {
                index: i as u64,
                range: r,
                estimated_rows: rows.round() as u64,
                estimated_bytes: bytes.round() as u64,
            }
        })
        .collect())
}

fn cut_by_bytes(
    range: CursorRange,
    target: f64,
    density: &[DensityBucket],
    granularity: i64,
) -> Result<Vec<CursorRange>, String> {
    let mut bounds = Vec::new();
    let mut start = range.from;
    let mut acc = 0.0;
    for bucket in density {
        let Some(seg) = clip(bucket.range, range) else { continue };
        let seg_bytes = bucket.bytes * seg.width() as f64 / bucket.range.width() as f64;
        if seg_bytes <= 0.0 {
            continue;
        }
        let per_unit = seg_bytes / seg.width() as f64;
        let mut pos = seg.from.max(start);
        loop {
            let remaining = per_unit * (seg.to - pos) as f64;
            if acc + remaining < target {
                acc += remaining;
                break;
            }
            let need = ((target - acc) / per_unit).ceil().max(1.0) as i64;
            let mut cut = round_up(pos.saturating_add(need), granularity);
            if cut <= start {
                cut = start + 1;
            }
            if cut >= range.to {
                break;
            }
            bounds.push(CursorRange::new(start, cut));
            if bounds.len() > MAX_CHUNKS {
                return Err(format!("more than {MAX_CHUNKS} chunks; raise `chunking.target_bytes`"));
            }
            acc = 0.0;
            start = cut;
            pos = cut;
            if pos >= seg.to {
                break;
            }
        }
    }
    // A small tail is folded into the previous chunk rather than loaded on its own.
    if acc < target * 0.25 && !bounds.is_empty() {
        let last = bounds.pop().expect("not empty");
        start = last.from;
    }
    bounds.push(CursorRange::new(start, range.to));
    Ok(bounds)
}

fn round_up(value: i64, granularity: i64) -> i64 {
    let rem = value.rem_euclid(granularity);
    if rem == 0 {
        value
    } else {
        value.saturating_add(granularity - rem)
    }
}

fn clip(a: CursorRange, b: CursorRange) -> Option<CursorRange> {
    let from = a.from.max(b.from);
    let to = a.to.min(b.to);
    (from < to).then_some(CursorRange { from, to })
}

/// Estimated (rows, bytes) inside `range`, prorating partly covered buckets.
pub fn estimate(range: CursorRange, density: &[DensityBucket]) -> (f64, f64) {
    density
        .iter()
        .fold((0.0, 0.0), |(rows, bytes), b| match clip(b.range, range) {
            Some(seg) => {
                let f = seg.width() as f64 / b.range.width() as f64;
                (rows + b.rows * f, bytes + b.bytes * f)
            }
            None => (rows, bytes),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn buckets(weights: &[f64], width: i64) -> Vec<DensityBucket> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| DensityBucket {
                range: CursorRange::new(i as i64 * width, (i as i64 + 1) * width),
                rows: *w,
                bytes: *w * 100.0,
            })
            .collect()
    }

    fn assert_covers(range: CursorRange, chunks: &[PlannedChunk]) {
        assert_eq!(chunks.first().unwrap().range.from, range.from);
        assert_eq!(chunks.last().unwrap().range.to, range.to);
        for w in chunks.windows(2) {
            assert_eq!(
                w[0].range.to, w[1].range.from,
                "gap or overlap between {:?} and {:?}",
                w[0], w[1]
            );
        }
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.range.from < c.range.to);
            assert_eq!(c.index, i as u64);
        }
    }

    #[test]
    fn skewed_density_gives_even_chunks() {
        // 90% of the bytes in the last 10% of the range.
        let mut w = vec![1.0; 90];
        w.extend(vec![81.0; 10]);
        let d = buckets(&w, 1000);
        let range = CursorRange::new(0, 100_000);
        let chunks = plan_chunks(range, PlanPolicy::TargetBytes(10_000), &d, 1).unwrap();
        assert_covers(range, &chunks);
        let sizes: Vec<u64> = chunks.iter().map(|c| c.estimated_bytes).collect();
        let (min, max) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
        assert!(max <= 2 * min.max(1) + 1, "uneven chunks: {sizes:?}");
    }

    #[test]
    fn fixed_width_clips_last_chunk() {
        let range = CursorRange::new(0, 25);
        let chunks = plan_chunks(range, PlanPolicy::FixedWidth(10), &[], 1).unwrap();
        assert_eq!(
            chunks.iter().map(|c| c.range.width()).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
    }

    #[test]
    fn empty_statistics_give_one_chunk() {
        let range = CursorRange::new(5, 500);
        let chunks = plan_chunks(range, PlanPolicy::TargetBytes(10), &[], 1).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_covers(range, &chunks);
    }

    proptest! {
        #[test]
        fn plans_cover_exactly_and_are_deterministic(
            weights in proptest::collection::vec(0.0f64..1000.0, 1..60),
            width in 1i64..5000,
            from_off in 0i64..3000,
            len in 1i64..400_000,
            target in 1u64..200_000,
            granularity in 1i64..100,
        ) {
            let d = buckets(&weights, width);
            let range = CursorRange::new(from_off, from_off + len);
            let a = plan_chunks(range, PlanPolicy::TargetBytes(target), &d, granularity).unwrap();
            let b = plan_chunks(range, PlanPolicy::TargetBytes(target), &d, granularity).unwrap();
            prop_assert_eq!(&a, &b);
            assert_covers(range, &a);
            let f = plan_chunks(range, PlanPolicy::FixedWidth(width), &d, granularity).unwrap();
            assert_covers(range, &f);
        }
    }
}
