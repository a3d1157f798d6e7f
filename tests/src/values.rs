//! Reading cursor values and comparing schemas, for checks and their messages.

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use backhaul_core::cursor::CursorKind;

const MILLIS_PER_DAY: i64 = 86_400_000;

/// The values of a cursor column in cursor units (microseconds UTC for timestamps of any unit,
/// days for dates, the value for integers); `None` for NULL.
///
/// Sub-unit values round down (a nanosecond timestamp to its microsecond, a `Date64` to its
/// day), which keeps `from <= v < to` comparisons exact for half-open ranges. Fails for a type
/// [`CursorKind::of`] does not accept or a value outside `i64` microseconds.
pub fn cursor_values(array: &dyn Array) -> Result<Vec<Option<i64>>, String> {
    let data_type = array.data_type();
    if CursorKind::of(data_type).is_none() {
        return Err(format!("type {data_type} cannot be a cursor"));
    }
    let raw = cast(array, &DataType::Int64).map_err(|e| format!("reading {data_type} as integers: {e}"))?;
    let scale = |v: i64| -> Option<i64> {
        match data_type {
            DataType::Timestamp(TimeUnit::Second, _) => v.checked_mul(1_000_000),
            DataType::Timestamp(TimeUnit::Millisecond, _) => v.checked_mul(1_000),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => Some(v.div_euclid(1_000)),
            DataType::Date64 => Some(v.div_euclid(MILLIS_PER_DAY)),
            _ => Some(v),
        }
    };
    raw.as_primitive::<Int64Type>()
        .iter()
        .map(|v| match v {
            None => Ok(None),
            Some(v) => scale(v)
                .map(Some)
                .ok_or_else(|| format!("{data_type} value {v} overflows microseconds")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Date64Array, Int32Array, TimestampNanosecondArray, TimestampSecondArray};

    use super::*;

    #[test]
    fn converts_every_cursor_type_to_cursor_units() {
        let secs = TimestampSecondArray::from(vec![Some(2), None]).with_timezone("UTC");
        assert_eq!(cursor_values(&secs).unwrap(), vec![Some(2_000_000), None]);
        // Rounding down keeps half-open comparisons exact: -1 ns lies before 0 µs.
        let nanos = TimestampNanosecondArray::from(vec![1_999, -1]);
        assert_eq!(cursor_values(&nanos).unwrap(), vec![Some(1), Some(-1)]);
        let d64 = Date64Array::from(vec![MILLIS_PER_DAY * 3 + 5, -1]);
        assert_eq!(cursor_values(&d64).unwrap(), vec![Some(3), Some(-1)]);
        assert_eq!(cursor_values(&Int32Array::from(vec![-7])).unwrap(), vec![Some(-7)]);
        let text: Arc<dyn Array> = Arc::new(arrow::array::StringArray::from(vec!["x"]));
        assert!(cursor_values(text.as_ref()).is_err());
    }
}
