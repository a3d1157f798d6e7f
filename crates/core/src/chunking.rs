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
    Ok(numbered(bounds, density))
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

/// How the cursor follows the table's physical row order, from the source's statistics: what
/// the planner needs to estimate how much of the table each chunk's range query reads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhysicalOrder {
    /// Correlation between cursor order and physical order, −1 to 1: PostgreSQL's
    /// `pg_stats.correlation`; 1 for a cursor that is the clustered key.
    pub correlation: f64,
    /// Pages the table's rows are stored in.
    pub heap_pages: f64,
    /// Rows in the whole table (not only the planned range).
    pub table_rows: f64,
    /// Parallel block-range scans the source reads one chunk with when that chunk's range
    /// query reads the whole table anyway (PostgreSQL: `source.parallel_scans`, one snapshot);
    /// 1 when it never splits a chunk's scan.
    #[serde(default = "one_scan")]
    pub block_scans: usize,
}

fn one_scan() -> usize {
    1
}

impl PhysicalOrder {
    /// Estimated pages a range query returning `rows` rows reads.
    ///
    /// With `N` rows on `P` pages (`k = N/P` a page) and a share `f = rows/N` of them read: in
    /// physical order the rows sit together on `f·P` pages; uncorrelated, each page holds one of
    /// them with probability `1 − (1 − f)^k` (Yao's estimate), so the query touches
    /// `P·(1 − (1 − f)^k)` pages, nearly all of them once `f` exceeds a few `1/k`. In between,
    /// the two are mixed by the squared correlation, as PostgreSQL's own index cost model does.
    pub fn pages_touched(&self, rows: f64) -> f64 {
        if rows.is_nan() || rows <= 0.0 {
            return 0.0;
        }
        let pages = self.heap_pages.max(1.0);
        let table_rows = self.table_rows.max(rows).max(1.0);
        let share = (rows / table_rows).min(1.0);
        let rows_per_page = (table_rows / pages).max(1.0);
        let ordered = (share * pages).max(1.0);
        let scattered = (pages * (1.0 - (1.0 - share).powf(rows_per_page))).max(ordered);
        let c2 = self.correlation.clamp(-1.0, 1.0).powi(2);
        c2 * ordered + (1.0 - c2) * scattered
    }

    /// Estimated database read amplification of range queries returning `rows` each: pages
    /// they read together over the pages one query over all of them reads. 1 means the plan
    /// reads the table as often as a single query would.
    pub fn read_amplification(&self, rows: impl IntoIterator<Item = f64>) -> f64 {
        let (mut touched, mut total) = (0.0, 0.0);
        for r in rows {
            touched += self.pages_touched(r);
            total += r.max(0.0);
        }
        let once = self.pages_touched(total);
        if once <= 0.0 { 1.0 } else { (touched / once).max(1.0) }
    }

    /// Whether a range query returning `rows` reads most of the table, so the source reads
    /// that chunk as [`block_scans`](Self::block_scans) parallel block-range scans instead of
    /// one range scan. An estimate for the plan: the source decides per chunk from its own
    /// query plan.
    pub fn scans_in_parallel(&self, rows: f64) -> bool {
        self.block_scans > 1 && self.pages_touched(rows) >= 0.5 * self.heap_pages
    }

    /// The fewest chunks that keep every worker busy: a chunk read by parallel block scans
    /// is that many workers' share of the work, so `workers / block_scans` when that divides
    /// evenly, else one chunk per worker.
    fn fewest_chunks(&self, workers: usize) -> usize {
        let scans = self.block_scans.max(1);
        if workers.is_multiple_of(scans) {
            workers / scans
        } else {
            workers
        }
    }
}

/// A plan above this estimated read amplification is warned about.
pub const AMPLIFICATION_WARNING: f64 = 1.5;

/// A plan whose chunks leave workers idle more than this share of the run is rebalanced.
pub const IDLE_LIMIT: f64 = 0.10;

/// Share of the workers' time spent idle when `workers` workers take chunks of these sizes in
/// order, each the moment it is free (how the coordinator hands out leases), with time
/// proportional to size. 0 means all finish together.
pub fn idle_share(sizes: impl IntoIterator<Item = f64>, workers: usize) -> f64 {
    let workers = workers.max(1);
    let mut busy = vec![0.0f64; workers];
    let mut total = 0.0;
    for size in sizes {
        let size = size.max(0.0);
        total += size;
        let next = busy
            .iter_mut()
            .min_by(|a, b| a.total_cmp(b))
            .expect("at least one worker");
        *next += size;
    }
    let makespan = busy.iter().copied().fold(0.0, f64::max);
    if makespan <= 0.0 {
        0.0
    } else {
        1.0 - total / (workers as f64 * makespan)
    }
}

/// What the planner knows beyond the density: who runs the plan and how the table is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanContext {
    /// Workers the plan is balanced for.
    pub workers: usize,
    /// How the cursor follows physical order; `None` when the source cannot tell.
    pub order: Option<PhysicalOrder>,
    /// The most chunks the destination takes for one job (a quota on commits), if any.
    pub max_chunks: Option<ChunkCap>,
}

/// A destination's cap on how many chunks one job may have, e.g. BigQuery's 1,500 table
/// modifications per table per day: the planner makes chunks larger to stay within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCap {
    /// The most chunks.
    pub chunks: usize,
    /// What the cap is, for `plan` (e.g. `BigQuery's 1,500 ... per table per day`).
    pub reason: &'static str,
}

/// A plan and what it costs the source.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkPlan {
    /// The chunks.
    pub chunks: Vec<PlannedChunk>,
    /// Estimated read amplification (see [`PhysicalOrder::read_amplification`]); `None`
    /// without a physical-order hint.
    pub read_amplification: Option<f64>,
    /// Estimated idle share of the workers (see [`idle_share`]), from estimated bytes.
    pub idle_share: f64,
    /// Set when the destination's [`ChunkCap`] made the chunks larger: how many chunks the
    /// policy alone would have cut.
    pub capped_from: Option<usize>,
}

/// Plans chunks for `context.workers` workers.
///
/// Fixed-width policies are cut as written. For a byte target the count from the target is the
/// starting point, then:
/// 1. *Balance*: when that count leaves workers idle more than [`IDLE_LIMIT`] (for instance 3
///    chunks for 2 workers, or 2 uneven ones), it is rounded up to a multiple of the workers and
///    the range is cut into that many chunks of equal estimated bytes.
/// 2. *Read the table about once*: when the source's physical order makes that plan's
///    estimated read amplification exceed [`AMPLIFICATION_WARNING`] (an uncorrelated cursor,
///    where every chunk's range query reads most pages), the count drops to the largest
///    multiple of the workers that stays under it, and never below one chunk per worker:
///    chunks stream, so a large chunk costs no memory, only replay granularity.
///
/// Where the cursor follows physical order, amplification stays near 1 and the byte target
/// decides: more, smaller chunks.
///
/// Last, a destination's [`ChunkCap`] wins over both: a byte-target plan over the cap is cut
/// into the cap's count (a multiple of the workers when the cap allows) of equal bytes; a
/// fixed width is multiplied until the plan fits.
pub fn plan_for(
    range: CursorRange,
    policy: PlanPolicy,
    density: &[DensityBucket],
    granularity: i64,
    context: PlanContext,
) -> Result<ChunkPlan, String> {
    let workers = context.workers.max(1);
    let mut chunks = plan_chunks(range, policy, density, granularity)?;
    let mut capped_from = None;
    let total_bytes = estimate(range, density).1;
    if matches!(policy, PlanPolicy::TargetBytes(_)) && total_bytes > 0.0 {
        let mut count = chunks.len();
        if even_idle_share(count, workers) > IDLE_LIMIT {
            count = count.div_ceil(workers) * workers;
        }
        if let Some(order) = context.order {
            let total_rows = estimate(range, density).0;
            let even_amplification = |n: usize| order.read_amplification(vec![total_rows / n as f64; n]);
            if even_amplification(count) > AMPLIFICATION_WARNING {
                let fewest = order.fewest_chunks(workers);
                let mut n = (count / workers) * workers;
                while n > fewest && even_amplification(n) > AMPLIFICATION_WARNING {
                    n = if n > workers { n - workers } else { fewest };
                }
                count = n.max(fewest).min(count);
            }
        }
        if let Some(cap) = context.max_chunks
            && count > cap.chunks
        {
            capped_from = Some(count);
            count = if cap.chunks >= workers {
                cap.chunks / workers * workers
            } else {
                cap.chunks.max(1)
            };
        }
        if count != chunks.len() || idle_share(work_pieces(&chunks, context.order, workers), workers) > IDLE_LIMIT {
            chunks = numbered(cut_evenly(range, count, density, granularity), density);
        }
    }
    if let (PlanPolicy::FixedWidth(width), Some(cap)) = (policy, context.max_chunks)
        && chunks.len() > cap.chunks
    {
        capped_from = Some(chunks.len());
        let mut factor = chunks.len().div_ceil(cap.chunks.max(1)) as i64;
        while chunks.len() > cap.chunks {
            chunks = plan_chunks(
                range,
                PlanPolicy::FixedWidth(width.saturating_mul(factor)),
                density,
                granularity,
            )?;
            factor += 1;
        }
    }
    let read_amplification = context
        .order
        .map(|o| o.read_amplification(chunks.iter().map(|c| c.estimated_rows as f64)));
    let idle = idle_share(work_pieces(&chunks, context.order, workers), workers);
    Ok(ChunkPlan {
        chunks,
        read_amplification,
        idle_share: idle,
        capped_from,
    })
}

/// The chunks' estimated bytes as pieces of work for [`idle_share`]: a chunk the source reads
/// with parallel block scans is that many equal pieces, where the planner counted it so (see
/// `PhysicalOrder::fewest_chunks`).
fn work_pieces(chunks: &[PlannedChunk], order: Option<PhysicalOrder>, workers: usize) -> Vec<f64> {
    let mut pieces = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let bytes = chunk.estimated_bytes as f64;
        match order {
            Some(o) if o.fewest_chunks(workers) < workers && o.scans_in_parallel(chunk.estimated_rows as f64) => {
                let n = o.block_scans;
                pieces.extend(std::iter::repeat_n(bytes / n as f64, n));
            }
            _ => pieces.push(bytes),
        }
    }
    pieces
}

/// Idle share of `count` equal chunks over `workers` workers.
fn even_idle_share(count: usize, workers: usize) -> f64 {
    let rounds = count.div_ceil(workers).max(1);
    1.0 - count as f64 / (rounds * workers) as f64
}

/// Cuts `range` into `count` chunks of equal estimated bytes (fewer when cut points coincide
/// after rounding to `granularity`).
fn cut_evenly(range: CursorRange, count: usize, density: &[DensityBucket], granularity: i64) -> Vec<CursorRange> {
    let granularity = granularity.max(1);
    let total = estimate(range, density).1;
    let mut cuts = Vec::with_capacity(count);
    let mut next = 1usize;
    let mut before = 0.0;
    for bucket in density {
        let Some(seg) = clip(bucket.range, range) else { continue };
        let seg_bytes = bucket.bytes * seg.width() as f64 / bucket.range.width() as f64;
        if seg_bytes <= 0.0 {
            continue;
        }
        let per_unit = seg_bytes / seg.width() as f64;
        while next < count {
            let goal = total * next as f64 / count as f64;
            if before + seg_bytes < goal {
                break;
            }
            let offset = ((goal - before) / per_unit).round() as i64;
            cuts.push(round_up(seg.from.saturating_add(offset), granularity));
            next += 1;
        }
        before += seg_bytes;
    }
    let mut bounds = Vec::with_capacity(count);
    let mut start = range.from;
    for cut in cuts {
        if cut > start && cut < range.to {
            bounds.push(CursorRange::new(start, cut));
            start = cut;
        }
    }
    bounds.push(CursorRange::new(start, range.to));
    bounds
}

/// Numbers ranges as planned chunks with their estimates.
fn numbered(bounds: Vec<CursorRange>, density: &[DensityBucket]) -> Vec<PlannedChunk> {
    bounds
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
        .collect()
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

    const TABLE: PhysicalOrder = PhysicalOrder {
        correlation: 0.0,
        heap_pages: 100_000.0,
        table_rows: 6_000_000.0,
        block_scans: 1,
    };

    #[test]
    fn an_uncorrelated_cursor_reads_most_pages_per_chunk() {
        let uncorrelated = TABLE;
        // A 4% slice of a table with 60 rows a page touches about 91% of its pages.
        let touched = uncorrelated.pages_touched(240_000.0);
        assert!((90_000.0..93_000.0).contains(&touched), "{touched}");
        let amplification = uncorrelated.read_amplification(vec![240_000.0; 25]);
        assert!((22.0..23.5).contains(&amplification), "{amplification}");
        let correlated = PhysicalOrder {
            correlation: -1.0,
            ..TABLE
        };
        assert!((correlated.pages_touched(240_000.0) - 4_000.0).abs() < 1.0);
        let amplification = correlated.read_amplification(vec![240_000.0; 25]);
        assert!((amplification - 1.0).abs() < 1e-9, "{amplification}");
        assert_eq!(TABLE.read_amplification([]), 1.0);
    }

    /// 6 M rows of 200 bytes spread evenly over the range.
    fn lineitem() -> (CursorRange, Vec<DensityBucket>) {
        let range = CursorRange::new(0, 2_400);
        let d = (0..100)
            .map(|i| DensityBucket {
                range: CursorRange::new(i * 24, (i + 1) * 24),
                rows: 60_000.0,
                bytes: 12_000_000.0,
            })
            .collect();
        (range, d)
    }

    fn context(workers: usize, correlation: Option<f64>) -> PlanContext {
        PlanContext {
            max_chunks: None,
            workers,
            order: correlation.map(|correlation| PhysicalOrder { correlation, ..TABLE }),
        }
    }

    #[test]
    fn a_destination_cap_makes_chunks_larger_and_says_from_how_many() {
        let (range, d) = lineitem();
        let cap = ChunkCap {
            chunks: 7,
            reason: "test cap",
        };
        let capped = PlanContext {
            max_chunks: Some(cap),
            ..context(2, None)
        };
        let by_bytes = plan_for(range, PlanPolicy::TargetBytes(32 << 20), &d, 1, capped).unwrap();
        assert_eq!(by_bytes.chunks.len(), 6, "the largest multiple of 2 workers within 7");
        assert_eq!(by_bytes.capped_from, Some(36));
        assert_covers(range, &by_bytes.chunks);
        let width = range.width() / 36;
        let by_width = plan_for(range, PlanPolicy::FixedWidth(width), &d, 1, capped).unwrap();
        assert!(by_width.chunks.len() <= 7, "{}", by_width.chunks.len());
        assert!(by_width.capped_from.is_some_and(|n| n >= 36));
        assert_covers(range, &by_width.chunks);
        // Within the cap nothing changes.
        let loose = PlanContext {
            max_chunks: Some(ChunkCap { chunks: 100, ..cap }),
            ..context(2, None)
        };
        let plain = plan_for(range, PlanPolicy::TargetBytes(32 << 20), &d, 1, loose).unwrap();
        assert_eq!((plain.chunks.len(), plain.capped_from), (36, None));
    }

    #[test]
    fn an_uncorrelated_cursor_gets_one_chunk_per_worker_and_a_correlated_one_keeps_the_target() {
        let (range, d) = lineitem();
        let target = PlanPolicy::TargetBytes(32 << 20);
        let uncorrelated = plan_for(range, target, &d, 1, context(2, Some(0.003))).unwrap();
        assert_eq!(uncorrelated.chunks.len(), 2);
        let amplification = uncorrelated.read_amplification.unwrap();
        assert!((1.9..2.0).contains(&amplification), "{amplification}");
        let correlated = plan_for(range, target, &d, 1, context(2, Some(1.0))).unwrap();
        assert_eq!(correlated.chunks.len(), 36, "1.2 GB in 32 MiB chunks, an even count");
        assert!(correlated.read_amplification.unwrap() < 1.2);
        // Without a hint the byte target decides, as before.
        let unknown = plan_for(range, target, &d, 1, context(2, None)).unwrap();
        assert_eq!(unknown.chunks.len(), 36);
        assert_eq!(unknown.read_amplification, None);
        // Four workers on an uncorrelated cursor: four chunks, read about four times.
        let four = plan_for(range, target, &d, 1, context(4, Some(0.0))).unwrap();
        assert_eq!(four.chunks.len(), 4);
    }

    #[test]
    fn a_source_that_splits_whole_table_scans_gets_fewer_chunks_and_no_idle_worker() {
        let (range, d) = lineitem();
        let target = PlanPolicy::TargetBytes(32 << 20);
        let split = |workers, correlation| PlanContext {
            max_chunks: None,
            workers,
            order: Some(PhysicalOrder {
                correlation,
                block_scans: 2,
                ..TABLE
            }),
        };
        // Two workers, each chunk read by two block scans: one chunk reads the heap once.
        let plan = plan_for(range, target, &d, 1, split(2, 0.003)).unwrap();
        assert_eq!(plan.chunks.len(), 1);
        assert!((plan.read_amplification.unwrap() - 1.0).abs() < 1e-9);
        assert!(plan.idle_share < 1e-9, "{}", plan.idle_share);
        // Four workers: two chunks of two scans each.
        let plan = plan_for(range, target, &d, 1, split(4, 0.0)).unwrap();
        assert_eq!(plan.chunks.len(), 2);
        assert!(plan.idle_share < 1e-9, "{}", plan.idle_share);
        // A correlated cursor reads few pages per chunk: nothing is split, the target decides.
        let plan = plan_for(range, target, &d, 1, split(2, 1.0)).unwrap();
        assert_eq!(plan.chunks.len(), 36);
        let order = split(2, 1.0).order.unwrap();
        assert!(!order.scans_in_parallel(6_000_000.0 / 36.0));
        assert!(order.scans_in_parallel(6_000_000.0));
    }

    #[test]
    fn two_workers_get_two_even_chunks_not_a_big_and_a_small_one() {
        // 1.2 GB at 800 MB a chunk cuts 800 + 400 MB (a third of the run idle); balanced, two of 600 MB.
        let (range, d) = lineitem();
        let before = plan_chunks(range, PlanPolicy::TargetBytes(800_000_000), &d, 1).unwrap();
        let sizes: Vec<f64> = before.iter().map(|c| c.estimated_bytes as f64).collect();
        assert!(idle_share(sizes, 2) > IDLE_LIMIT, "{before:?}");
        let plan = plan_for(range, PlanPolicy::TargetBytes(800_000_000), &d, 1, context(2, None)).unwrap();
        let sizes: Vec<u64> = plan.chunks.iter().map(|c| c.estimated_bytes).collect();
        assert_eq!(sizes, vec![600_000_000, 600_000_000]);
        assert!(plan.idle_share < 1e-9);
        // Three chunks' worth for two workers becomes four.
        let plan = plan_for(range, PlanPolicy::TargetBytes(400_000_000), &d, 1, context(2, None)).unwrap();
        assert_eq!(plan.chunks.len(), 4);
        assert!(plan.idle_share < IDLE_LIMIT);
    }

    #[test]
    fn fixed_width_plans_are_cut_as_written_and_still_estimated() {
        let (range, d) = lineitem();
        let plan = plan_for(range, PlanPolicy::FixedWidth(800), &d, 1, context(2, Some(0.0))).unwrap();
        assert_eq!(plan.chunks.len(), 3);
        assert!(plan.read_amplification.unwrap() > AMPLIFICATION_WARNING);
        assert!((plan.idle_share - 0.25).abs() < 1e-9, "{}", plan.idle_share);
    }

    #[test]
    fn idle_share_follows_lease_order() {
        assert_eq!(idle_share([1.0, 1.0], 2), 0.0);
        assert!((idle_share([4.16, 1.84], 2) - (1.0 - 6.0 / 8.32)).abs() < 1e-9);
        assert!((idle_share([1.0, 1.0, 1.0], 2) - 0.25).abs() < 1e-9);
        assert_eq!(idle_share([], 3), 0.0);
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

        #[test]
        fn balanced_plans_cover_exactly_and_leave_workers_busy(
            weights in proptest::collection::vec(1.0f64..1000.0, 1..60),
            width in 100i64..5000,
            target in 1u64..20_000_000,
            workers in 1usize..9,
            correlation in proptest::option::of(-1.0f64..1.0),
        ) {
            let d = buckets(&weights, width);
            let range = CursorRange::new(0, width * weights.len() as i64);
            let order = correlation.map(|correlation| PhysicalOrder {
                correlation,
                heap_pages: 1_000.0,
                table_rows: weights.iter().sum::<f64>(),
                block_scans: 1 + workers % 3,
            });
            let context = PlanContext {
                workers,
                order,
                max_chunks: None,
            };
            let a = plan_for(range, PlanPolicy::TargetBytes(target), &d, 1, context).unwrap();
            let b = plan_for(range, PlanPolicy::TargetBytes(target), &d, 1, context).unwrap();
            prop_assert_eq!(&a, &b);
            assert_covers(range, &a.chunks);
            // Cut points are whole cursor units, so a chunk may be off by one unit's bytes.
            let unit = weights.iter().fold(0.0f64, |m, w| m.max(*w)) * 100.0 / width as f64;
            let total: f64 = weights.iter().sum::<f64>() * 100.0;
            let slack = unit * 2.0 * a.chunks.len() as f64 / total * workers as f64;
            prop_assert!(a.idle_share <= IDLE_LIMIT + slack, "idle {} of {:?}", a.idle_share, a.chunks);
            if let Some(amplification) = a.read_amplification {
                prop_assert!(amplification >= 1.0);
                // Never more chunks than the byte target asks for, rounded up to the workers.
                let plain = plan_chunks(range, PlanPolicy::TargetBytes(target), &d, 1).unwrap();
                prop_assert!(a.chunks.len() <= plain.len().div_ceil(workers) * workers);
            }
        }
    }
}
