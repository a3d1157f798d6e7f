//! One chunk: a binary `COPY` in a REPEATABLE READ READ ONLY transaction, read and decoded on a
//! thread of its own and handed on as record batches through a bounded channel.
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
use backhaul_core::{Error, Result};
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::CopyOutStream;

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
}

/// Starts the chunk's thread and returns its batches once the `COPY` runs; errors before the
/// first row (connection, permissions, a changed table) are returned here.
pub(crate) async fn start(chunk: Chunk) -> Result<BatchStream> {
    let (tx, rx) = mpsc::channel::<Item>(CHANNEL_CAPACITY);
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
            let (conn, copy, decoder, what) = match begin(&chunk).await {
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
    match ready_rx.await {
        Ok(Ok(())) => Ok(channel_stream(rx, task, "postgres extract")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(match task.await {
            Err(e) => Error::Internal(format!("postgres extract task failed: {e}")),
            Ok(()) => Error::Internal("postgres extract task ended before the COPY started".into()),
        }),
    }
}

/// Connects, opens the snapshot, describes the table inside it and starts the `COPY`.
async fn begin(chunk: &Chunk) -> Result<(Conn, CopyOutStream, RowDecoder, String)> {
    let conn = chunk.connector.connect().await?;
    // Parallel workers would only funnel rows through the leader, which serializes the COPY
    // anyway, and compete with the other chunks for cores; JIT compiles per query for a plan
    // that is a plain scan. Both off for this transaction only.
    conn.client
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off",
        )
        .await
        .map_err(|e| conn.error(&e, "begin"))?;
    // Described inside the transaction, so the decoders match what COPY sends.
    let table = catalog::describe(&conn, &chunk.spec, &chunk.policies).await?;
    let sql = table.copy_sql(chunk.range);
    let what = format!(
        "COPY {} {}",
        table.display_name(),
        chunk.range.display(table.cursor_type.kind())
    );
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
