//! Arrow IPC encoding of `arrow_rows` and the splitting that keeps every AppendRows request
//! under the size limit. Pure CPU work: the client runs it on a blocking thread.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use arrow::ipc::writer::{DictionaryTracker, EncodedData, IpcDataGenerator, IpcWriteOptions, write_message};
use bytes::Bytes;

use crate::error::{Error, Result};

/// Bytes of an AppendRows request besides the schema and the record batch (stream name,
/// offset, trace id, protobuf framing). Generous on purpose: the limit is the server's.
pub const REQUEST_OVERHEAD_BYTES: usize = 16 * 1024;

/// One slice of a caller's batch, encoded, small enough for one AppendRows request.
#[derive(Debug, Clone)]
pub struct EncodedPiece {
    /// Rows in this piece; the next piece starts this many rows later.
    pub rows: usize,
    /// The encapsulated IPC record batch message (`serialized_record_batch`).
    pub bytes: Bytes,
}

/// The encapsulated IPC schema message (`serialized_schema`). Dictionary-encoded columns
/// are refused: `arrow_rows` has no place for dictionary batches.
pub fn encode_schema(schema: &Schema) -> Result<Bytes> {
    if let Some(field) = schema.fields().iter().find(|f| contains_dictionary(f.data_type())) {
        return Err(Error::Encode(format!(
            "column `{}` is dictionary-encoded ({}); cast it to its value type before appending",
            field.name(),
            field.data_type()
        )));
    }
    let options = IpcWriteOptions::default();
    let mut tracker = DictionaryTracker::new(false);
    let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(schema, &mut tracker, &options);
    to_message_bytes(encoded, &options)
}

/// Encodes `batch` as one or more pieces of at most `max_piece_bytes` each, in row order.
/// A single row larger than the limit cannot be sent and is an error naming its index.
pub fn encode_pieces(batch: &RecordBatch, max_piece_bytes: usize) -> Result<Vec<EncodedPiece>> {
    let mut pieces = Vec::new();
    split_into(batch, 0, max_piece_bytes, &mut pieces)?;
    Ok(pieces)
}

fn split_into(
    batch: &RecordBatch,
    first_row: usize,
    max_piece_bytes: usize,
    out: &mut Vec<EncodedPiece>,
) -> Result<()> {
    let bytes = encode_batch(batch)?;
    let rows = batch.num_rows();
    if bytes.len() <= max_piece_bytes {
        out.push(EncodedPiece { rows, bytes });
        return Ok(());
    }
    if rows <= 1 {
        return Err(Error::RowTooLarge {
            row: first_row as u64,
            bytes: bytes.len(),
            limit: max_piece_bytes,
        });
    }
    // Aim each part at the limit by the measured size, then check each part again: row
    // sizes vary, so a part may still need splitting.
    let parts = bytes.len().div_ceil(max_piece_bytes).clamp(2, rows);
    let rows_per_part = rows.div_ceil(parts);
    let mut start = 0;
    while start < rows {
        let len = rows_per_part.min(rows - start);
        split_into(&batch.slice(start, len), first_row + start, max_piece_bytes, out)?;
        start += len;
    }
    Ok(())
}

fn encode_batch(batch: &RecordBatch) -> Result<Bytes> {
    let options = IpcWriteOptions::default();
    let mut tracker = DictionaryTracker::new(false);
    let (dictionaries, encoded) = IpcDataGenerator::default()
        .encode(batch, &mut tracker, &options, &mut Default::default())
        .map_err(|e| Error::Encode(e.to_string()))?;
    if !dictionaries.is_empty() {
        return Err(Error::Encode(
            "dictionary-encoded columns are not supported by arrow_rows".into(),
        ));
    }
    to_message_bytes(encoded, &options)
}

fn to_message_bytes(encoded: EncodedData, options: &IpcWriteOptions) -> Result<Bytes> {
    let mut out = Vec::with_capacity(encoded.ipc_message.len() + encoded.arrow_data.len() + 16);
    write_message(&mut out, encoded, options).map_err(|e| Error::Encode(e.to_string()))?;
    Ok(Bytes::from(out))
}

fn contains_dictionary(data_type: &DataType) -> bool {
    match data_type {
        DataType::Dictionary(..) => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) | DataType::Map(f, _) => {
            contains_dictionary(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().any(|f| contains_dictionary(f.data_type())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::Field;
    use arrow::ipc::reader::StreamReader;

    use super::*;

    fn batch(rows: usize, text_len: usize) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows as i64));
        let text: ArrayRef = Arc::new(StringArray::from_iter_values((0..rows).map(|i| {
            let c = char::from(b'a' + (i % 26) as u8);
            c.to_string().repeat(text_len)
        })));
        RecordBatch::try_from_iter([("id", ids), ("text", text)]).unwrap()
    }

    /// Decodes a piece the way the server does: schema message followed by the batch message.
    fn decode(schema: &Bytes, piece: &Bytes) -> RecordBatch {
        let stream = [schema.as_ref(), piece.as_ref()].concat();
        let mut reader = StreamReader::try_new(stream.as_slice(), None).unwrap();
        reader.next().unwrap().unwrap()
    }

    #[test]
    fn a_small_batch_is_one_piece_that_decodes_back() {
        let batch = batch(100, 10);
        let schema = encode_schema(&batch.schema()).unwrap();
        let pieces = encode_pieces(&batch, 1 << 20).unwrap();
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].rows, 100);
        assert_eq!(decode(&schema, &pieces[0].bytes), batch);
    }

    #[test]
    fn a_large_batch_is_split_under_the_limit_in_row_order() {
        // ~1 KiB per row, 20,000 rows: about 20 MiB in all, against a 1 MiB limit.
        let batch = batch(20_000, 1024);
        let limit = 1 << 20;
        let schema = encode_schema(&batch.schema()).unwrap();
        let pieces = encode_pieces(&batch, limit).unwrap();
        assert!(pieces.len() >= 20, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| p.bytes.len() <= limit));
        assert_eq!(pieces.iter().map(|p| p.rows).sum::<usize>(), 20_000);
        // Slices are encoded without the rows sliced away, so the pieces add up to the whole.
        let total: usize = pieces.iter().map(|p| p.bytes.len()).sum();
        assert!(total < 21 << 20, "{total} bytes");
        let decoded: Vec<RecordBatch> = pieces.iter().map(|p| decode(&schema, &p.bytes)).collect();
        let joined = arrow::compute::concat_batches(&batch.schema(), &decoded).unwrap();
        assert_eq!(joined, batch);
    }

    #[test]
    fn the_default_limit_fits_a_real_request() {
        let limit = crate::client::DEFAULT_MAX_REQUEST_BYTES - REQUEST_OVERHEAD_BYTES;
        let pieces = encode_pieces(&batch(30_000, 1000), limit).unwrap();
        assert!(pieces.len() >= 3);
        assert!(
            pieces
                .iter()
                .all(|p| p.bytes.len() + REQUEST_OVERHEAD_BYTES <= 10_000_000)
        );
    }

    #[test]
    fn a_row_over_the_limit_is_an_error_naming_it() {
        let mut rows = batch(10, 10);
        let big: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..10).map(|i| "x".repeat(if i == 7 { 4096 } else { 1 })),
        ));
        rows = RecordBatch::try_new(rows.schema(), vec![rows.column(0).clone(), big]).unwrap();
        let err = encode_pieces(&rows, 2048).unwrap_err();
        assert!(matches!(err, Error::RowTooLarge { row: 7, .. }), "{err:?}");
        assert_eq!(err.class(), backhaul_core::ErrorClass::Permanent);
    }

    #[test]
    fn dictionary_columns_are_refused_by_name() {
        let schema = Schema::new(vec![Field::new(
            "tag",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        )]);
        let err = encode_schema(&schema).unwrap_err();
        assert!(err.to_string().contains("`tag`"), "{err}");
    }
}
