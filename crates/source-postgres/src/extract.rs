//! One chunk: a binary `COPY` in a REPEATABLE READ READ ONLY transaction, decoded on a blocking
//! thread and handed on as record batches through a bounded channel.
//!
//! Memory stays bounded whatever the chunk size: the server's data waits in the socket (the
//! connection task reads ahead at most one buffer of messages), at most [`CHANNEL_CAPACITY`]
//! batches wait for the consumer, and one batch is being built.
//!
//! The decoding thread pulls `CopyData` messages itself (`Handle::block_on` on the copy stream,
//! then whatever is already buffered without blocking), so there is no extra hop per message.
//! When the consumer drops the stream, the thread notices (even while waiting for the server),
//! stops, and drops the connection, which aborts its IO task and closes the socket: the server
//! ends the `COPY` instead of sending the rest of the chunk.

use arrow::array::RecordBatch;
use backhaul_core::connector::BatchStream;
use backhaul_core::{Error, Result};
use futures::{FutureExt, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::CopyOutStream;

use crate::connect::Conn;
use crate::decode::RowDecoder;

/// Batches queued between the decoding thread and the consumer.
const CHANNEL_CAPACITY: usize = 2;

type Item = Result<RecordBatch>;

/// Streams the batches of a started `COPY`. `conn` has the transaction open; `what` names the
/// statement in errors.
pub(crate) fn stream(conn: Conn, copy: CopyOutStream, decoder: RowDecoder, what: String) -> BatchStream {
    let (tx, rx) = mpsc::channel::<Item>(CHANNEL_CAPACITY);
    let handle = Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        if let Err(e) = run(&handle, &conn, copy, decoder, &what, &tx) {
            // The consumer may be gone already; then nobody needs the error.
            let _ = tx.blocking_send(Err(e));
        }
        // `conn` drops here: the socket closes whether or not the COPY finished.
    });
    into_stream(rx, task)
}

/// Yields the channel's batches; once it closes, reports a panic of the decoding thread.
fn into_stream(rx: mpsc::Receiver<Item>, task: JoinHandle<()>) -> BatchStream {
    futures::stream::unfold((rx, Some(task)), |(mut rx, task)| async move {
        if let Some(item) = rx.recv().await {
            return Some((item, (rx, task)));
        }
        match task?.await {
            Ok(()) => None,
            Err(e) => Some((
                Err(Error::Internal(format!("postgres extract task failed: {e}"))),
                (rx, None),
            )),
        }
    })
    .boxed()
}

/// What the next pull from the server gave.
enum Pulled {
    Data(bytes::Bytes),
    End,
    /// The consumer dropped the stream.
    Gone,
}

fn run(
    handle: &Handle,
    conn: &Conn,
    copy: CopyOutStream,
    mut decoder: RowDecoder,
    what: &str,
    tx: &mpsc::Sender<Item>,
) -> Result<()> {
    let mut copy = Box::pin(copy);
    // Bytes of a row that spans messages; empty almost always.
    let mut carry: Vec<u8> = Vec::new();
    let mut buffered_ready = false;
    loop {
        // Take what the connection task already buffered without blocking; wait (and watch
        // for the consumer going away) only when nothing is there.
        let pulled = if buffered_ready {
            match copy.next().now_or_never() {
                Some(Some(Ok(b))) => Pulled::Data(b),
                Some(Some(Err(e))) => return Err(conn.error(&e, what)),
                Some(None) => Pulled::End,
                None => {
                    buffered_ready = false;
                    continue;
                }
            }
        } else {
            let next = handle.block_on(async {
                tokio::select! {
                    biased;
                    _ = tx.closed() => None,
                    item = copy.next() => Some(item),
                }
            });
            buffered_ready = true;
            match next {
                None => Pulled::Gone,
                Some(Some(Ok(b))) => Pulled::Data(b),
                Some(Some(Err(e))) => return Err(conn.error(&e, what)),
                Some(None) => Pulled::End,
            }
        };
        let data = match pulled {
            Pulled::Gone => return Ok(()),
            Pulled::End => break,
            Pulled::Data(d) => d,
        };
        if carry.is_empty() {
            let used = feed(&mut decoder, &data, tx)?;
            let Some(used) = used else { return Ok(()) };
            carry.extend_from_slice(&data[used..]);
        } else {
            carry.extend_from_slice(&data);
            let Some(used) = feed(&mut decoder, &carry, tx)? else {
                return Ok(());
            };
            carry.drain(..used);
        }
    }
    if !decoder.finished() || !carry.is_empty() {
        return Err(Error::Unreachable {
            system: "source".into(),
            message: format!("postgres {} ({what}): the COPY data ended early", conn.endpoint()),
        });
    }
    if decoder.pending_rows() > 0 && tx.blocking_send(Ok(decoder.take_batch()?)).is_err() {
        return Ok(());
    }
    // The COPY's closing messages are not read; dropping its stream lets the connection skip
    // them. Then a clean end of the read-only transaction; the connection closes right after.
    drop(copy);
    handle
        .block_on(conn.client.batch_execute("COMMIT"))
        .map_err(|e| conn.error(&e, what))?;
    Ok(())
}

/// Decodes every complete row of `buf`, sending full batches; returns the bytes consumed, or
/// `None` when the consumer is gone.
fn feed(decoder: &mut RowDecoder, buf: &[u8], tx: &mpsc::Sender<Item>) -> Result<Option<usize>> {
    let mut pos = 0;
    loop {
        pos += decoder.decode(&buf[pos..])?;
        if decoder.batch_full() {
            if tx.blocking_send(Ok(decoder.take_batch()?)).is_err() {
                return Ok(None);
            }
            continue;
        }
        return Ok(Some(pos));
    }
}
