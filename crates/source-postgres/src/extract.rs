//! One chunk: a binary `COPY` in a REPEATABLE READ READ ONLY transaction, read and decoded on a
//! thread of its own and handed on as record batches through a bounded channel. A chunk that
//! PostgreSQL would read with a sequential scan may be read as several block-range scans in
//! one snapshot, each on its own thread, into the same channel ([`blockscan`]).
//!
//! The thread runs a single-threaded Tokio runtime that owns the chunk's connection: reading
//! the socket, parsing protocol messages and decoding rows into Arrow all happen on it, so the
//! shared runtime does no CPU-heavy work and no row ever crosses threads. (Running the
//! connection on the shared runtime and decoding on a blocking thread costs a thread wake-up
//! per 8 KiB read; measured on TPC-H lineitem that halved extraction speed.)
//!
//! Memory stays bounded whatever the chunk size: unread data waits in the socket, at most
//! [`CHANNEL_CAPACITY`] batches wait for the consumer, and one batch is being built. When the
//! consumer drops the stream, the thread notices (also while waiting for the server), stops and
//! drops the connection, closing the socket: the server ends the `COPY` instead of sending the
//! rest of the chunk.

use crate::spec::PostgresSourceSpec;
use arrow::array::RecordBatch;
use backhaul_core::connector::{BatchStream, channel_stream};
use backhaul_core::cursor::CursorRange;
use backhaul_core::{Error, ErrorClass, Result};
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::CopyOutStream;

use std::sync::Arc;

use crate::blockscan::{self, Blocks, Scan};
use crate::catalog;
use crate::connect::{Conn, Connector};
use crate::decode::RowDecoder;
use crate::types::Policies;

/// Batches queued between the extracting thread and the consumer.
const CHANNEL_CAPACITY: usize = 2;

type Item = Result<RecordBatch>;

/// What one chunk reads.
pub(crate) struct Chunk {
    pub connector: Connector,
    pub spec: PostgresSourceSpec,
    pub policies: Policies,
    pub range: CursorRange,
    pub batch_rows: usize,
    /// The most parallel block-range scans for a chunk PostgreSQL would read whole
    /// (`source.parallel_scans`; see [`blockscan`]).
    pub scans: usize,
}

/// Starts the chunk's scans (one, or several block ranges in one snapshot; [`blockscan`]) and
/// returns their batches once every `COPY` runs; errors before the first row (connection,
/// permissions, a changed table) are returned here.
pub(crate) async fn start(chunk: Chunk) -> Result<BatchStream> {
    let chunk = Arc::new(chunk);
    let (tx, rx) = mpsc::channel::<Item>(CHANNEL_CAPACITY);
    let Some(split) = blockscan::split(&chunk).await? else {
        let (task, ready) = spawn_scan(chunk, Scan::default(), tx);
        return match ready.await {
            Ok(Ok(())) => Ok(channel_stream(rx, task, "postgres extract")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ended_early(task.await)),
        };
    };
    let mut tasks = Vec::with_capacity(split.scans.len());
    let mut readies = Vec::with_capacity(split.scans.len());
    for scan in split.scans.iter().cloned() {
        let (task, ready) = spawn_scan(chunk.clone(), scan, tx.clone());
        tasks.push(task);
        readies.push(ready);
    }
    drop(tx);
    // Every scan has imported the snapshot once its COPY runs; only then may the exporting
    // transaction end. On an error the receiver drops below and the other scans stop.
    for ready in readies {
        match ready.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Internal(
                    "postgres extract scan ended before its COPY started".into(),
                ));
            }
        }
    }
    split.release().await?;
    let all = tokio::spawn(async move {
        for task in tasks {
            match task.await {
                Ok(()) => {}
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("postgres extract scan: {e}"),
            }
        }
    });
    Ok(channel_stream(rx, all, "postgres extract"))
}

fn ended_early(joined: std::result::Result<(), tokio::task::JoinError>) -> Error {
    match joined {
        Err(e) => Error::Internal(format!("postgres extract task failed: {e}")),
        Ok(()) => Error::Internal("postgres extract task ended before the COPY started".into()),
    }
}

/// Starts one scan on a thread of its own (see the module docs); the receiver says when its
/// `COPY` runs or why it could not start.
fn spawn_scan(
    chunk: Arc<Chunk>,
    scan: Scan,
    tx: mpsc::Sender<Item>,
) -> (tokio::task::JoinHandle<()>, oneshot::Receiver<Result<()>>) {
    let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
    let task = tokio::task::spawn_blocking(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(Error::Internal(format!("postgres extract runtime: {e}"))));
                return;
            }
        };
        runtime.block_on(async move {
            let (conn, copy, decoder, what) = match begin(&chunk, &scan).await {
                Ok(started) => started,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if ready_tx.send(Ok(())).is_err() {
                return; // extract() was cancelled
            }
            if let Err(e) = pump(&conn, copy, decoder, &what, &tx).await {
                // The consumer may be gone already; then nobody needs the error.
                let _ = tx.send(Err(e)).await;
            }
            // `conn` drops here: the socket closes whether or not the COPY finished.
        });
    });
    (task, ready_rx)
}

/// Connects, opens the snapshot (or imports the split's), describes the table inside it and
/// starts the `COPY`.
async fn begin(chunk: &Chunk, scan: &Scan) -> Result<(Conn, CopyOutStream, RowDecoder, String)> {
    let conn = chunk.connector.connect().await?;
    // A snapshot must be imported before the transaction's first query. Parallel workers
    // would only funnel rows through the leader, which serializes the COPY anyway, and compete
    // with the other chunks for cores; JIT compiles per query for a plan that is a plain scan.
    // Both off for this transaction only.
    let import = match &scan.snapshot {
        // The id comes from pg_export_snapshot (hex digits and dashes), never from the user.
        Some(id) => format!("SET TRANSACTION SNAPSHOT '{}'; ", id.replace('\'', "")),
        None => String::new(),
    };
    conn.client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {import}\
             SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off"
        ))
        .await
        .map_err(|e| match conn.error(&e, "begin") {
            // The snapshot is only ours to import while the exporting transaction lives; if that
            // connection ended early, a new attempt of the chunk exports a new one.
            err if scan.snapshot.is_some() && err.class() == ErrorClass::Permanent => Error::Unreachable {
                system: "source".into(),
                message: format!("{err} (importing the chunk's exported snapshot)"),
            },
            err => err,
        })?;
    // Described inside the transaction, so the decoders match what COPY sends.
    let table = catalog::describe(&conn, &chunk.spec, &chunk.policies).await?;
    let sql = table.copy_sql(chunk.range, scan.blocks);
    let mut what = format!(
        "COPY {} {}",
        table.display_name(),
        chunk.range.display(table.cursor_type.kind())
    );
    if let Some(ctid) = scan.blocks.and_then(Blocks::predicate) {
        what.push_str(&format!(" {ctid}"));
    }
    let copy = conn
        .client
        .copy_out(sql.as_str())
        .await
        .map_err(|e| conn.error(&e, &what))?;
    let decoder = RowDecoder::new(&table, &chunk.policies, chunk.batch_rows)?;
    Ok((conn, copy, decoder, what))
}

/// Reads the `COPY` to its end, sending full batches; returns early (`Ok`) when the consumer
/// is gone.
async fn pump(
    conn: &Conn,
    copy: CopyOutStream,
    mut decoder: RowDecoder,
    what: &str,
    tx: &mpsc::Sender<Item>,
) -> Result<()> {
    let mut copy = Box::pin(copy);
    // Bytes of a row that spans messages; empty almost always.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        // Messages already read are taken at once; only an empty buffer waits, and then also
        // watches for the consumer going away.
        let next = match copy.next().now_or_never() {
            Some(next) => next,
            None => tokio::select! {
                biased;
                _ = tx.closed() => return Ok(()),
                next = copy.next() => next,
            },
        };
        let data = match next {
            Some(Ok(data)) => data,
            Some(Err(e)) => return Err(conn.error(&e, what)),
            None => break,
        };
        let buf: &[u8] = if carry.is_empty() {
            &data
        } else {
            carry.extend_from_slice(&data);
            &carry
        };
        let mut pos = 0;
        loop {
            pos += decoder.decode(&buf[pos..])?;
            if !decoder.batch_full() {
                break;
            }
            if tx.send(Ok(decoder.take_batch()?)).await.is_err() {
                return Ok(());
            }
        }
        if carry.is_empty() {
            carry.extend_from_slice(&data[pos..]);
        } else {
            carry.drain(..pos);
        }
    }
    if !decoder.finished() || !carry.is_empty() {
        return Err(Error::Unreachable {
            system: "source".into(),
            message: format!("postgres {} ({what}): the COPY data ended early", conn.endpoint()),
        });
    }
    if decoder.pending_rows() > 0 && tx.send(Ok(decoder.take_batch()?)).await.is_err() {
        return Ok(());
    }
    // The COPY's closing messages are not read; dropping its stream lets the connection skip
    // them. Then a clean end of the read-only transaction; the connection closes right after.
    drop(copy);
    conn.client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| conn.error(&e, what))?;
    Ok(())
}
