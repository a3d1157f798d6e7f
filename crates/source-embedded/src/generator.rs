//! A pure, deterministic, random-access generator of `orders` rows.
//!
//! Every value is a hash of `(seed, hour index, row index, salt)`; no RNG state is carried from
//! one hour to the next. The rows of any hour can therefore be produced on their own, in time
//! proportional to that hour's rows, and a range costs what the range holds, never what the
//! table holds. The same seed always yields the same rows.
//!
//! Volume patterns (all multiplied together, on top of `rows_per_day`):
//! - growth: volume doubles every 365 days after 2020-01-01 (and halves every 365 days before);
//! - weekly: Saturday and Sunday carry 40% of a weekday's volume;
//! - daily: business hours (09:00-18:00 UTC) carry twice the volume of the other hours;
//! - spikes: about one day in 17, chosen by a hash of the day, carries 5x its volume.
//!
//! The weekly and daily shapes are normalized so that, without growth and spikes, an average day
//! holds `rows_per_day` rows; spikes add volume on top.

use backhaul_core::cursor::CursorRange;

/// Microseconds in one hour.
pub const HOUR_MICROS: i64 = 3_600_000_000;
/// Microseconds in one day.
pub const DAY_MICROS: i64 = 86_400_000_000;
/// 2020-01-01T00:00:00Z in microseconds since the epoch: the reference point of the growth curve.
pub const GROWTH_EPOCH_MICROS: i64 = 1_577_836_800_000_000;
/// `order_id = hour_index * ORDER_ID_STRIDE + i`; an hour never holds more rows than this.
pub const ORDER_ID_STRIDE: i64 = 1_000_000;
/// Days a shipped order may wait after its creation day before `shipped_on`.
pub const MAX_SHIP_DELAY_DAYS: i64 = 5;
/// One day in this many (on average) is a spike day.
pub const SPIKE_ONE_IN: u64 = 17;
/// Volume multiplier of a spike day.
pub const SPIKE_FACTOR: f64 = 5.0;

const WEEKEND_FACTOR: f64 = 0.4;
const BUSINESS_FACTOR: f64 = 2.0;
const BUSINESS_HOURS: std::ops::Range<i64> = 9..18;

// Salts keep the hash streams of different decisions independent.
const SALT_COUNT: u64 = 0x01;
const SALT_SPIKE: u64 = 0x02;
const SALT_ROW: u64 = 0x03;

const CURRENCIES: [&str; 6] = ["USD", "USD", "EUR", "EUR", "GBP", "JPY"];
const STATUSES: [&str; 6] = ["pending", "paid", "shipped", "delivered", "cancelled", "refunded"];
const CHANNELS: [&str; 4] = ["web", "ios", "android", "store"];
// Non-ASCII city names make sure text survives the pipeline byte for byte.
const CITIES: [&str; 8] = [
    "Berlin",
    "Zürich",
    "東京",
    "São Paulo",
    "Kraków",
    "New York",
    "Montréal",
    "Lagos",
];
const TAGS: [&str; 5] = ["gift", "promo", "b2b", "repeat", "express"];
const NOTES: [&str; 5] = [
    "leave at the door",
    "call before delivery",
    "gift wrap, no invoice in the box",
    "fragile — handle with care",
    "deliver after 18:00",
];

/// One generated order. Temporal and decimal values are in their storage units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Unique: `hour_index * ORDER_ID_STRIDE + i`.
    pub order_id: i64,
    /// Customer, 1..=1_000_000.
    pub customer_id: i64,
    /// Creation time, microseconds since the epoch UTC, inside the row's hour.
    pub created_at: i64,
    /// Amount in cents (Decimal(18,2) scaled by 100).
    pub amount_cents: i64,
    /// ISO currency code.
    pub currency: &'static str,
    /// Order status.
    pub status: &'static str,
    /// Small JSON object text, or `None`.
    pub attributes: Option<String>,
    /// Free text, `None` for about 30% of rows.
    pub note: Option<&'static str>,
    /// Shipping day, days since the epoch; `None` unless shipped or delivered.
    pub shipped_on: Option<i32>,
}

impl Order {
    /// Estimated stored size in bytes: the sum of the encoded value sizes (8 per integer, the
    /// text length for text, nothing for NULL).
    pub fn encoded_bytes(&self) -> u64 {
        let fixed = 4 * 8;
        let text = self.currency.len() + self.status.len();
        let attributes = self.attributes.as_ref().map_or(0, |a| a.len());
        let note = self.note.map_or(0, str::len);
        let shipped = if self.shipped_on.is_some() { 8 } else { 0 };
        (fixed + text + attributes + note + shipped) as u64
    }
}

/// splitmix64's finalizer: a fast integer hash with good avalanche.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash(seed: u64, a: i64, b: u64, salt: u64) -> u64 {
    mix(mix(mix(seed ^ salt.rotate_left(48)) ^ a as u64) ^ b)
}

/// A value in [0, 1) from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The hour index (hours since the epoch) of a timestamp.
pub fn hour_index(micros: i64) -> i64 {
    micros.div_euclid(HOUR_MICROS)
}

/// Whether `day` (days since the epoch) is a spike day for `seed`.
pub fn is_spike_day(seed: u64, day: i64) -> bool {
    hash(seed, day, 0, SALT_SPIKE).is_multiple_of(SPIKE_ONE_IN)
}

/// Expected (fractional) row count of the hour with index `hour`.
fn expected_in_hour(seed: u64, rows_per_day: u64, hour: i64) -> f64 {
    let start = hour * HOUR_MICROS;
    let day = hour.div_euclid(24);
    let years = (start - GROWTH_EPOCH_MICROS) as f64 / (365.0 * DAY_MICROS as f64);
    let growth = 2f64.powf(years);
    // 1970-01-01 was a Thursday, so Monday is 0 and Saturday/Sunday are 5 and 6.
    let weekday = (day + 3).rem_euclid(7);
    let weekly = if weekday >= 5 { WEEKEND_FACTOR } else { 1.0 };
    let weekly_norm = 7.0 / (5.0 + 2.0 * WEEKEND_FACTOR);
    let hour_of_day = hour.rem_euclid(24);
    let daily = if BUSINESS_HOURS.contains(&hour_of_day) {
        BUSINESS_FACTOR
    } else {
        1.0
    };
    let business = (BUSINESS_HOURS.end - BUSINESS_HOURS.start) as f64;
    let daily_sum = business * BUSINESS_FACTOR + (24.0 - business);
    let spike = if is_spike_day(seed, day) { SPIKE_FACTOR } else { 1.0 };
    rows_per_day as f64 * growth * weekly * weekly_norm * (daily / daily_sum) * spike
}

/// Rows generated for the hour starting at `hour_start_micros` (any instant inside the hour
/// names the same hour). The expected value is rounded up or down by a hash of the hour, so the
/// count is deterministic; it is capped below [`ORDER_ID_STRIDE`] so order ids stay unique.
pub fn rows_in_hour(seed: u64, rows_per_day: u64, hour_start_micros: i64) -> u64 {
    let hour = hour_index(hour_start_micros);
    let expected = expected_in_hour(seed, rows_per_day, hour).min((ORDER_ID_STRIDE - 1) as f64);
    let whole = expected.floor();
    let round_up = unit(hash(seed, hour, 0, SALT_COUNT)) < expected - whole;
    whole as u64 + u64::from(round_up)
}

/// Rows whose `created_at` lies in `range` (microseconds). Bounds on whole hours cost one hash
/// per hour and read no rows; a bound inside an hour generates that one hour to count exactly.
pub fn expected_rows(seed: u64, rows_per_day: u64, range: CursorRange) -> u64 {
    let mut total = 0;
    for hour in hours_overlapping(range) {
        let start = hour * HOUR_MICROS;
        if range.from <= start && start + HOUR_MICROS <= range.to {
            total += rows_in_hour(seed, rows_per_day, start);
        } else {
            generate_hour(seed, rows_per_day, start, |o| {
                if range.from <= o.created_at && o.created_at < range.to {
                    total += 1;
                }
            });
        }
    }
    total
}

/// Expected rows created on `day` (days since the epoch).
pub fn rows_in_day(seed: u64, rows_per_day: u64, day: i64) -> u64 {
    (0..24)
        .map(|h| rows_in_hour(seed, rows_per_day, (day * 24 + h) * HOUR_MICROS))
        .sum()
}

fn hours_overlapping(range: CursorRange) -> std::ops::Range<i64> {
    if range.from >= range.to {
        return 0..0;
    }
    hour_index(range.from)..hour_index(range.to - 1) + 1
}

/// Calls `sink` with every order whose `created_at` lies in `range` (microseconds), hour by
/// hour in ascending order.
pub fn generate(seed: u64, rows_per_day: u64, range: CursorRange, mut sink: impl FnMut(&Order)) {
    for hour in hours_overlapping(range) {
        generate_hour(seed, rows_per_day, hour * HOUR_MICROS, |o| {
            if range.from <= o.created_at && o.created_at < range.to {
                sink(o);
            }
        });
    }
}

/// Calls `sink` with every order of the hour containing `hour_start_micros`.
pub fn generate_hour(seed: u64, rows_per_day: u64, hour_start_micros: i64, mut sink: impl FnMut(&Order)) {
    let hour = hour_index(hour_start_micros);
    for i in 0..rows_in_hour(seed, rows_per_day, hour * HOUR_MICROS) {
        sink(&order(seed, hour, i));
    }
}

/// Row `i` of hour `hour`, from the hash of the two alone.
pub fn order(seed: u64, hour: i64, i: u64) -> Order {
    let base = hash(seed, hour, i, SALT_ROW);
    // Independent values for each column from one base hash.
    let h = |k: u64| mix(base ^ k.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let created_at = hour * HOUR_MICROS + (h(1) % HOUR_MICROS as u64) as i64;
    let status = STATUSES[(h(4) % STATUSES.len() as u64) as usize];
    let shipped_on = matches!(status, "shipped" | "delivered").then(|| {
        let day = created_at.div_euclid(DAY_MICROS) + (h(8) % (MAX_SHIP_DELAY_DAYS as u64 + 1)) as i64;
        day as i32
    });
    Order {
        order_id: hour * ORDER_ID_STRIDE + i as i64,
        customer_id: 1 + (h(2) % 1_000_000) as i64,
        created_at,
        amount_cents: amount_cents(h(3)),
        currency: CURRENCIES[(h(5) % CURRENCIES.len() as u64) as usize],
        status,
        attributes: attributes(h(6)),
        note: (h(7) % 10 >= 3).then(|| NOTES[(h(9) % NOTES.len() as u64) as usize]),
        shipped_on,
    }
}

/// Mostly 1.00-5000.00, log-uniform; one row in 500 is huge (up to 10^12 cents) so decimal
/// precision is exercised well beyond what a float would carry exactly.
fn amount_cents(h: u64) -> i64 {
    if h.is_multiple_of(500) {
        let huge = 1_000_000_000_000u64;
        return (huge - mix(h) % (huge / 2)) as i64;
    }
    let log_max = (500_000f64).ln();
    let u = unit(mix(h ^ 0x55));
    (100.0 * (u * (log_max - 100f64.ln())).exp()).round() as i64
}

/// `{"channel":..,"items":..,"tags":[..],"city":..}`; NULL for one row in 20. Every piece is a
/// constant without characters that need escaping, so the text is valid JSON by construction.
fn attributes(h: u64) -> Option<String> {
    if h.is_multiple_of(20) {
        return None;
    }
    let channel = CHANNELS[(mix(h ^ 1) % CHANNELS.len() as u64) as usize];
    let items = b'1' + (mix(h ^ 2) % 9) as u8; // one ASCII digit, 1-9
    let city = CITIES[(mix(h ^ 3) % CITIES.len() as u64) as usize];
    let tag_count = (mix(h ^ 4) % 3) as usize;
    let first_tag = (mix(h ^ 5) % TAGS.len() as u64) as usize;
    let mut json = String::with_capacity(96);
    json.push_str("{\"channel\":\"");
    json.push_str(channel);
    json.push_str("\",\"items\":");
    json.push(char::from(items));
    json.push_str(",\"tags\":[");
    for k in 0..tag_count {
        if k > 0 {
            json.push(',');
        }
        json.push('"');
        json.push_str(TAGS[(first_tag + k) % TAGS.len()]);
        json.push('"');
    }
    json.push_str("],\"city\":\"");
    json.push_str(city);
    json.push_str("\"}");
    Some(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_2024_03_04: i64 = 19_786; // a Monday

    fn day_range(day: i64, days: i64) -> CursorRange {
        CursorRange::new(day * DAY_MICROS, (day + days) * DAY_MICROS)
    }

    fn collect(seed: u64, range: CursorRange) -> Vec<Order> {
        let mut out = Vec::new();
        generate(seed, 2_000, range, |o| out.push(o.clone()));
        out
    }

    #[test]
    fn same_seed_same_rows_and_hours_are_random_access() {
        let day = day_range(DAY_2024_03_04, 1);
        let a = collect(7, day);
        assert_eq!(a, collect(7, day));
        assert_ne!(a, collect(8, day));
        // Hour 13 computed alone equals hour 13 computed as part of the day.
        let h13 = day.from + 13 * HOUR_MICROS;
        let alone = collect(7, CursorRange::new(h13, h13 + HOUR_MICROS));
        let within: Vec<Order> = a
            .into_iter()
            .filter(|o| hour_index(o.created_at) == hour_index(h13))
            .collect();
        assert!(!alone.is_empty());
        assert_eq!(alone, within);
    }

    #[test]
    fn expected_rows_matches_generation_even_mid_hour() {
        for range in [
            day_range(DAY_2024_03_04, 2),
            CursorRange::new(
                day_range(DAY_2024_03_04, 1).from + 1_234_567_890,
                day_range(DAY_2024_03_04, 1).to - 77,
            ),
        ] {
            assert_eq!(expected_rows(3, 2_000, range), collect(3, range).len() as u64);
        }
    }

    #[test]
    fn rows_stay_inside_their_hour_and_ids_are_unique() {
        let rows = collect(1, day_range(DAY_2024_03_04, 2));
        let mut ids: Vec<i64> = rows.iter().map(|o| o.order_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), rows.len());
        for o in &rows {
            assert_eq!(o.order_id.div_euclid(ORDER_ID_STRIDE), hour_index(o.created_at));
            if let Some(a) = &o.attributes {
                let v: serde_json::Value = serde_json::from_str(a).expect("valid JSON");
                assert!(v.is_object());
            }
        }
        assert!(
            rows.iter()
                .any(|o| o.attributes.as_deref().is_some_and(|a| !a.is_ascii()))
        );
        assert!(rows.iter().any(|o| o.amount_cents >= 100_000_000_000));
        let nulls = rows.iter().filter(|o| o.note.is_none()).count() as f64 / rows.len() as f64;
        assert!((0.25..0.35).contains(&nulls), "note NULL fraction {nulls}");
    }

    #[test]
    fn volume_is_skewed() {
        let seed = 11;
        // Growth: the same weekday two years (104 weeks) earlier holds about a quarter of the rows.
        let early_day = DAY_2024_03_04 - 104 * 7;
        let early = rows_in_day(seed, 10_000, early_day) as f64;
        let late = rows_in_day(seed, 10_000, DAY_2024_03_04) as f64;
        let spikes = [early_day, DAY_2024_03_04].iter().any(|d| is_spike_day(seed, *d));
        if !spikes {
            assert!((3.5..4.5).contains(&(late / early)), "growth ratio {}", late / early);
        }
        // Weekends are quieter, business hours busier, and spike days exist.
        let monday = DAY_2024_03_04;
        let (weekday, weekend) = (
            rows_in_day(seed, 10_000, monday + 1),
            rows_in_day(seed, 10_000, monday + 5),
        );
        if !is_spike_day(seed, monday + 1) && !is_spike_day(seed, monday + 5) {
            assert!(weekend * 2 < weekday, "weekday {weekday}, weekend {weekend}");
        }
        let noon = rows_in_hour(seed, 10_000, (monday * 24 + 12) * HOUR_MICROS);
        let night = rows_in_hour(seed, 10_000, (monday * 24 + 3) * HOUR_MICROS);
        assert!(noon > night + night / 2, "noon {noon}, night {night}");
        let spike_days = (0..1700).filter(|d| is_spike_day(seed, DAY_2024_03_04 + d)).count();
        assert!((70..130).contains(&spike_days), "{spike_days} spike days in 1700");
        let spike = (0..100)
            .map(|d| DAY_2024_03_04 + d)
            .find(|d| is_spike_day(seed, *d))
            .expect("a spike in 100 days");
        assert!(
            rows_in_day(seed, 10_000, spike)
                > 3 * rows_in_day(seed, 10_000, spike - 7).min(rows_in_day(seed, 10_000, spike + 7))
        );
    }

    #[test]
    fn average_day_at_2020_is_rows_per_day() {
        // Four weeks around 2020-01-01, skipping spike days.
        let start = GROWTH_EPOCH_MICROS / DAY_MICROS - 14;
        let days: Vec<u64> = (start..start + 28)
            .filter(|d| !is_spike_day(5, *d))
            .map(|d| rows_in_day(5, 24_000, d))
            .collect();
        let avg = days.iter().sum::<u64>() as f64 / days.len() as f64;
        assert!((20_000.0..28_000.0).contains(&avg), "average {avg}");
    }
}
