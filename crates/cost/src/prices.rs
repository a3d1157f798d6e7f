//! Versioned price tables (`cost-models/*.toml`) and user overlays (contract prices).
//!
//! Every number the estimator uses is a row: an id, a validity period, a unit from the closed
//! list ([`Unit`]), an exact decimal value (or tiers), a confidence label and at least one
//! source with URL and title. A price change adds a row and closes the previous one; the
//! estimator picks the row valid on the `--as-of` date. Overlay rows win over table rows for the
//! same id and date. Loading validates everything that can be checked offline (see
//! `docs/cost.md#price-tables`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{CostError, Result};
use crate::money::{Dec, Schedule, Tier, TierMode};
use crate::units::Unit;

/// The only price-table format version this build reads.
pub const PRICE_SCHEMA_VERSION: u32 = 1;

/// The tables in `cost-models/`, compiled in so the binary works anywhere.
pub const BUILTIN_TABLES: &[(&str, &str)] = &[
    ("fivetran.toml", include_str!("../../../cost-models/fivetran.toml")),
    (
        "airbyte-cloud.toml",
        include_str!("../../../cost-models/airbyte-cloud.toml"),
    ),
    ("snowflake.toml", include_str!("../../../cost-models/snowflake.toml")),
    ("bigquery.toml", include_str!("../../../cost-models/bigquery.toml")),
    ("s3.toml", include_str!("../../../cost-models/s3.toml")),
    ("gcs.toml", include_str!("../../../cost-models/gcs.toml")),
    ("compute.toml", include_str!("../../../cost-models/compute.toml")),
];

/// How much a number can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Read in the vendor's own documentation (or your contract, in an overlay).
    Official,
    /// Read in a third-party page; plausible, not verified against the vendor.
    ThirdParty,
    /// Computed from sourced numbers; the row's note shows the arithmetic.
    Derived,
    /// Not verified. Never used silently: reports flag it, `--strict` refuses it.
    Unconfirmed,
}

impl Confidence {
    /// Spelling in files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Official => "official",
            Confidence::ThirdParty => "third_party",
            Confidence::Derived => "derived",
            Confidence::Unconfirmed => "unconfirmed",
        }
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a row describes; informative, and checked against the value's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// A price per unit, flat or tiered.
    Price,
    /// Units free per period before a price applies.
    Allowance,
    /// The smallest charge for any use, or a minimum billed quantity.
    Minimum,
    /// A limit imposed by the vendor (jobs per day, bytes per job).
    Quota,
    /// A measured throughput or consumption.
    Benchmark,
    /// A fixed consumption rate or factor (credits per hour of a warehouse size).
    Rate,
}

/// `[[source]]` in a table file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDoc {
    /// Referenced by rows' `sources`.
    pub id: String,
    /// Where it was read: `https://...`, or `file:...` for a contract in an overlay.
    pub url: String,
    /// Title of the page or document.
    pub title: String,
    /// When it was read (YYYY-MM-DD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieved: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierSpec {
    #[serde(default)]
    upto: Option<Dec>,
    unit_price: Dec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowSpec {
    id: String,
    kind: RowKind,
    unit: String,
    #[serde(default)]
    value: Option<Dec>,
    #[serde(default)]
    tiers: Option<Vec<TierSpec>>,
    #[serde(default)]
    tier_mode: Option<TierMode>,
    effective_from: String,
    #[serde(default)]
    effective_to: Option<String>,
    confidence: Confidence,
    sources: Vec<String>,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    schema_version: u32,
    vendor: String,
    product: String,
    currency: String,
    #[serde(default, rename = "source")]
    sources: Vec<SourceDoc>,
    #[serde(default, rename = "row")]
    rows: Vec<RowSpec>,
}

/// A row's number: one value, or tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Amount {
    /// One exact value.
    Value(Decimal),
    /// Bands of a tiered price (unit price per band).
    Tiers {
        /// Graduated or volume.
        mode: TierMode,
        /// Ascending bands, last one open.
        tiers: Vec<Tier>,
    },
}

/// One validated row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceRow {
    /// Stable id, e.g. `snowflake.credit.enterprise.aws_us_east_1`.
    pub id: String,
    /// What it describes.
    pub kind: RowKind,
    /// Its unit.
    pub unit: Unit,
    /// Its number.
    pub amount: Amount,
    /// First day the row applies.
    pub effective_from: NaiveDate,
    /// First day it no longer applies; `None` = still valid.
    pub effective_to: Option<NaiveDate>,
    /// Trust label.
    pub confidence: Confidence,
    /// Where it was read.
    pub sources: Vec<SourceDoc>,
    /// Caveats, arithmetic of derived values, why a value is unconfirmed.
    pub note: Option<String>,
    /// The file it came from.
    pub file: String,
    /// Whether it came from a user overlay.
    pub overlay: bool,
}

impl PriceRow {
    /// Whether the row applies on `day`.
    pub fn valid_on(&self, day: NaiveDate) -> bool {
        self.effective_from <= day && self.effective_to.is_none_or(|to| day < to)
    }

    /// The single value, or `None` for a tiered row.
    pub fn value(&self) -> Option<Decimal> {
        match &self.amount {
            Amount::Value(v) => Some(*v),
            Amount::Tiers { .. } => None,
        }
    }

    /// The row as a schedule: a flat price, or its tiers.
    pub fn schedule(&self) -> Schedule {
        match &self.amount {
            Amount::Value(v) => Schedule::flat(*v),
            Amount::Tiers { mode, tiers } => Schedule {
                mode: *mode,
                tiers: tiers.clone(),
                free: Decimal::ZERO,
                minimum: Decimal::ZERO,
            },
        }
    }

    /// How reports cite the row.
    pub fn citation(&self) -> Citation {
        let value = match &self.amount {
            Amount::Value(v) => v.normalize().to_string(),
            Amount::Tiers { mode, tiers } => format!(
                "{} tiers: {}",
                match mode {
                    TierMode::Graduated => "graduated",
                    TierMode::Volume => "volume",
                },
                tiers
                    .iter()
                    .map(|t| match t.upto {
                        Some(u) => format!("≤{} @ {}", u.normalize(), t.unit_price.normalize()),
                        None => format!("above @ {}", t.unit_price.normalize()),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let first = self.sources.first();
        Citation {
            id: self.id.clone(),
            value,
            unit: self.unit.as_str().to_string(),
            effective_from: self.effective_from.to_string(),
            effective_to: self.effective_to.map(|d| d.to_string()),
            confidence: self.confidence,
            source_title: first.map(|s| s.title.clone()).unwrap_or_default(),
            source_url: first.map(|s| s.url.clone()).unwrap_or_default(),
            file: self.file.clone(),
            overlay: self.overlay,
            note: self.note.clone(),
        }
    }
}

/// A row as a report cites it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Citation {
    /// Row id.
    pub id: String,
    /// The value as written (or its tiers).
    pub value: String,
    /// Unit.
    pub unit: String,
    /// Validity start.
    pub effective_from: String,
    /// Validity end (exclusive), if closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_to: Option<String>,
    /// Trust label.
    pub confidence: Confidence,
    /// Title of the first source.
    pub source_title: String,
    /// URL of the first source.
    pub source_url: String,
    /// File the row came from.
    pub file: String,
    /// From a user overlay.
    pub overlay: bool,
    /// The row's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Counts by confidence, for `cost-models check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BookSummary {
    /// Files read.
    pub files: Vec<String>,
    /// Rows per confidence label.
    pub rows_by_confidence: BTreeMap<String, usize>,
    /// Rows in total.
    pub rows: usize,
}

/// Every price row, with overlays on top.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    base: BTreeMap<String, Vec<PriceRow>>,
    overlay: BTreeMap<String, Vec<PriceRow>>,
    files: Vec<String>,
}

impl PriceBook {
    /// The tables compiled into the binary.
    pub fn builtin() -> Result<Self> {
        let files: Vec<(String, String)> = BUILTIN_TABLES
            .iter()
            .map(|(name, text)| (format!("<builtin>/{name}"), text.to_string()))
            .collect();
        Self::from_tables(&files)
    }

    /// Every `*.toml` file of `dir` (sorted by name).
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| CostError::io(dir, e))?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| CostError::io(dir, e))?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        paths.sort();
        if paths.is_empty() {
            return Err(CostError::invalid(
                dir.display().to_string(),
                "*.toml",
                "no price tables in this directory",
            ));
        }
        let mut files = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| CostError::io(&path, e))?;
            files.push((path.display().to_string(), text));
        }
        Self::from_tables(&files)
    }

    /// Vendor tables from `(file name, text)` pairs: each row id must start with its file's
    /// `vendor` and the same id may not appear in two files.
    pub fn from_tables(files: &[(String, String)]) -> Result<Self> {
        let mut book = PriceBook::default();
        let mut owner: HashMap<String, String> = HashMap::new();
        for (name, text) in files {
            let (vendor, rows) = parse_file(name, text, false)?;
            for row in &rows {
                if !row.id.starts_with(&format!("{vendor}.")) {
                    return Err(CostError::invalid(
                        name,
                        format!("row[{}].id", row.id),
                        format!("ids in this file start with `{vendor}.` (its vendor)"),
                    ));
                }
                if let Some(other) = owner.get(&row.id)
                    && other != name
                {
                    return Err(CostError::invalid(
                        name,
                        format!("row[{}].id", row.id),
                        format!("the id is already used in {other}; one id lives in one file"),
                    ));
                }
                owner.insert(row.id.clone(), name.clone());
            }
            insert_rows(&mut book.base, rows);
            book.files.push(name.clone());
        }
        Ok(book)
    }

    /// Adds a user overlay (same format; any ids). Its rows win for the dates they cover.
    pub fn add_overlay(&mut self, name: &str, text: &str) -> Result<()> {
        let (_, rows) = parse_file(name, text, true)?;
        let mut ids: BTreeMap<String, Vec<PriceRow>> = BTreeMap::new();
        insert_rows(&mut ids, rows);
        for (id, rows) in ids {
            if self.overlay.contains_key(&id) {
                return Err(CostError::invalid(
                    name,
                    format!("row[{id}].id"),
                    "an earlier overlay already sets this id; put all periods of one id in one overlay",
                ));
            }
            self.overlay.insert(id, rows);
        }
        self.files.push(name.to_string());
        Ok(())
    }

    /// Reads and adds an overlay file.
    pub fn add_overlay_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| CostError::io(path, e))?;
        self.add_overlay(&path.display().to_string(), &text)
    }

    /// The row for `id` valid on `day`: an overlay row first, then the tables.
    pub fn lookup(&self, id: &str, day: NaiveDate) -> Option<&PriceRow> {
        fn find<'a>(map: &'a BTreeMap<String, Vec<PriceRow>>, id: &str, day: NaiveDate) -> Option<&'a PriceRow> {
            map.get(id)?.iter().find(|r| r.valid_on(day))
        }
        find(&self.overlay, id, day).or_else(|| find(&self.base, id, day))
    }

    /// Whether any row (any date) has this id.
    pub fn knows(&self, id: &str) -> bool {
        self.overlay.contains_key(id) || self.base.contains_key(id)
    }

    /// Periods known for `id`, for "no row valid on DATE" messages.
    pub fn periods(&self, id: &str) -> Vec<String> {
        self.overlay
            .get(id)
            .into_iter()
            .chain(self.base.get(id))
            .flatten()
            .map(|r| match r.effective_to {
                Some(to) => format!("{}..{}", r.effective_from, to),
                None => format!("{}..", r.effective_from),
            })
            .collect()
    }

    /// Counts for `cost-models check`.
    pub fn summary(&self) -> BookSummary {
        let mut s = BookSummary {
            files: self.files.clone(),
            ..Default::default()
        };
        for row in self.base.values().chain(self.overlay.values()).flatten() {
            *s.rows_by_confidence
                .entry(row.confidence.as_str().to_string())
                .or_default() += 1;
            s.rows += 1;
        }
        s
    }
}

fn insert_rows(map: &mut BTreeMap<String, Vec<PriceRow>>, rows: Vec<PriceRow>) {
    for row in rows {
        map.entry(row.id.clone()).or_default().push(row);
    }
    for rows in map.values_mut() {
        rows.sort_by_key(|r| r.effective_from);
    }
}

fn parse_date(text: &str) -> std::result::Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| format!("`{text}` is not a date (YYYY-MM-DD)"))
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// Parses and validates one file: returns its vendor and rows.
fn parse_file(name: &str, text: &str, overlay: bool) -> Result<(String, Vec<PriceRow>)> {
    let spec: FileSpec = toml::from_str(text)
        .map_err(|e| CostError::invalid(name, crate::error::toml_error_line(text, &e), e.message().trim()))?;
    let bad = |field: String, msg: String| CostError::invalid(name, field, msg);
    if spec.schema_version != PRICE_SCHEMA_VERSION {
        return Err(bad(
            "schema_version".into(),
            format!(
                "this build reads version {PRICE_SCHEMA_VERSION}, not {}",
                spec.schema_version
            ),
        ));
    }
    if spec.currency != "USD" {
        return Err(bad("currency".into(), "only `USD` is supported".into()));
    }
    if !valid_id(&spec.vendor) || spec.product.trim().is_empty() {
        return Err(bad(
            "vendor".into(),
            "`vendor` is a lower-case id and `product` a non-empty name".into(),
        ));
    }
    let mut sources: HashMap<&str, &SourceDoc> = HashMap::new();
    for (i, s) in spec.sources.iter().enumerate() {
        let field = format!("source[{}]", if s.id.is_empty() { i.to_string() } else { s.id.clone() });
        let scheme_ok = s.url.starts_with("https://") || s.url.starts_with("http://") || s.url.starts_with("file:");
        if !valid_id(&s.id.replace('-', "_")) {
            return Err(bad(
                format!("{field}.id"),
                "a source needs an id (letters, digits, - and _)".into(),
            ));
        }
        if !scheme_ok || s.url.len() < 10 {
            return Err(bad(
                format!("{field}.url"),
                format!("`{}` is not a URL (https://..., or file:... for a contract)", s.url),
            ));
        }
        if s.title.trim().is_empty() {
            return Err(bad(format!("{field}.title"), "a source needs a title".into()));
        }
        if let Some(r) = &s.retrieved {
            parse_date(r).map_err(|m| bad(format!("{field}.retrieved"), m))?;
        }
        if sources.insert(s.id.as_str(), s).is_some() {
            return Err(bad(format!("{field}.id"), "duplicate source id".into()));
        }
    }
    let mut rows = Vec::with_capacity(spec.rows.len());
    for (i, r) in spec.rows.into_iter().enumerate() {
        let field = |f: &str| {
            if r.id.is_empty() {
                format!("row[{i}].{f}")
            } else {
                format!("row[{}].{f}", r.id)
            }
        };
        if !valid_id(&r.id) {
            return Err(bad(
                field("id"),
                format!("`{}` is not an id: dot-separated parts of a-z, 0-9 and _", r.id),
            ));
        }
        let unit = Unit::parse(&r.unit).map_err(|m| bad(field("unit"), m))?;
        let from = parse_date(&r.effective_from).map_err(|m| bad(field("effective_from"), m))?;
        let to = match r.effective_to.as_deref() {
            None => None,
            Some(t) => {
                let to = parse_date(t).map_err(|m| bad(field("effective_to"), m))?;
                if to <= from {
                    return Err(bad(
                        field("effective_to"),
                        format!("{to} is not after effective_from {from}"),
                    ));
                }
                Some(to)
            }
        };
        let amount = match (r.value, r.tiers, r.tier_mode) {
            (Some(v), None, None) => {
                if v.0.is_sign_negative() {
                    return Err(bad(field("value"), "must not be negative".into()));
                }
                Amount::Value(v.0)
            }
            (None, Some(tiers), Some(mode)) => {
                if r.kind != RowKind::Price {
                    return Err(bad(field("tiers"), "only `kind = \"price\"` rows may be tiered".into()));
                }
                let tiers: Vec<Tier> = tiers
                    .iter()
                    .map(|t| Tier {
                        upto: t.upto.map(Dec::get),
                        unit_price: t.unit_price.0,
                    })
                    .collect();
                Schedule {
                    mode,
                    tiers: tiers.clone(),
                    free: Decimal::ZERO,
                    minimum: Decimal::ZERO,
                }
                .check()
                .map_err(|m| bad(field("tiers"), m))?;
                Amount::Tiers { mode, tiers }
            }
            (None, Some(_), None) => {
                return Err(bad(
                    field("tier_mode"),
                    "tiers need `tier_mode = \"graduated\"` or `\"volume\"`".into(),
                ));
            }
            _ => {
                return Err(bad(
                    field("value"),
                    "set exactly one of `value` or `tiers` (with `tier_mode`)".into(),
                ));
            }
        };
        if r.sources.is_empty() {
            return Err(bad(field("sources"), "every row needs at least one source".into()));
        }
        let mut docs = Vec::new();
        for s in &r.sources {
            let doc = sources
                .get(s.as_str())
                .ok_or_else(|| bad(field("sources"), format!("no [[source]] with id `{s}` in this file")))?;
            docs.push((*doc).clone());
        }
        if r.confidence == Confidence::Unconfirmed && r.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return Err(bad(
                field("note"),
                "an unconfirmed row needs a note saying what is not confirmed".into(),
            ));
        }
        rows.push(PriceRow {
            id: r.id,
            kind: r.kind,
            unit,
            amount,
            effective_from: from,
            effective_to: to,
            confidence: r.confidence,
            sources: docs,
            note: r.note,
            file: name.to_string(),
            overlay,
        });
    }
    check_periods(name, &rows)?;
    Ok((spec.vendor, rows))
}

/// Rows of one id must not overlap in time, and must share a unit.
fn check_periods(name: &str, rows: &[PriceRow]) -> Result<()> {
    let mut by_id: BTreeMap<&str, Vec<&PriceRow>> = BTreeMap::new();
    for r in rows {
        by_id.entry(r.id.as_str()).or_default().push(r);
    }
    for (id, mut rows) in by_id {
        rows.sort_by_key(|r| r.effective_from);
        for pair in rows.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.unit != b.unit {
                return Err(CostError::invalid(
                    name,
                    format!("row[{id}].unit"),
                    format!("periods of one id must share a unit ({} vs {})", a.unit, b.unit),
                ));
            }
            let overlaps = a.effective_to.is_none_or(|to| to > b.effective_from);
            if overlaps {
                let a_to = a.effective_to.map_or("open".to_string(), |d| d.to_string());
                return Err(CostError::invalid(
                    name,
                    format!("row[{id}].effective_from"),
                    format!(
                        "validity periods overlap: {}..{a_to} and {}..; close the earlier row with effective_to = \"{}\"",
                        a.effective_from, b.effective_from, b.effective_from
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = r#"
schema_version = 1
vendor = "acme"
product = "Acme Cloud"
currency = "USD"

[[source]]
id = "acme-pricing"
url = "https://acme.example/pricing"
title = "Acme pricing"
"#;

    fn book(rows: &str) -> Result<PriceBook> {
        PriceBook::from_tables(&[("acme.toml".into(), format!("{HEADER}{rows}"))])
    }

    fn day(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }

    #[test]
    fn picks_the_row_valid_on_the_day_and_overlays_win() {
        let mut b = book(
            r#"
[[row]]
id = "acme.price"
kind = "price"
unit = "USD/GB"
value = "1.00"
effective_from = "2024-01-01"
effective_to = "2025-01-01"
confidence = "official"
sources = ["acme-pricing"]

[[row]]
id = "acme.price"
kind = "price"
unit = "USD/GB"
value = "1.25"
effective_from = "2025-01-01"
confidence = "official"
sources = ["acme-pricing"]
"#,
        )
        .unwrap();
        assert_eq!(
            b.lookup("acme.price", day("2024-06-01")).unwrap().value(),
            Some(Decimal::ONE)
        );
        assert_eq!(
            b.lookup("acme.price", day("2025-01-01")).unwrap().value(),
            Some(Decimal::new(125, 2))
        );
        assert!(b.lookup("acme.price", day("2023-12-31")).is_none());
        let overlay = r#"
schema_version = 1
vendor = "contract"
product = "Our Acme contract"
currency = "USD"

[[source]]
id = "contract"
url = "file:contracts/acme-2025.pdf"
title = "Acme order form 2025"

[[row]]
id = "acme.price"
kind = "price"
unit = "USD/GB"
value = "0.90"
effective_from = "2025-03-01"
confidence = "official"
sources = ["contract"]
"#;
        b.add_overlay("contract.toml", overlay).unwrap();
        let row = b.lookup("acme.price", day("2025-06-01")).unwrap();
        assert!(row.overlay);
        assert_eq!(row.value(), Some(Decimal::new(90, 2)));
        assert!(!b.lookup("acme.price", day("2025-02-01")).unwrap().overlay);
    }

    #[test]
    fn refuses_overlapping_periods() {
        let err = book(
            r#"
[[row]]
id = "acme.price"
kind = "price"
unit = "USD/GB"
value = "1.00"
effective_from = "2024-01-01"
confidence = "official"
sources = ["acme-pricing"]

[[row]]
id = "acme.price"
kind = "price"
unit = "USD/GB"
value = "1.25"
effective_from = "2025-01-01"
confidence = "official"
sources = ["acme-pricing"]
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("row[acme.price].effective_from") && err.contains("overlap"),
            "{err}"
        );
    }

    #[test]
    fn refuses_unknown_units_missing_sources_floats_and_silent_unconfirmed_rows() {
        let row = |unit: &str, value: &str, sources: &str, extra: &str| {
            format!(
                "[[row]]\nid = \"acme.x\"\nkind = \"price\"\nunit = \"{unit}\"\nvalue = {value}\neffective_from = \"2024-01-01\"\nconfidence = \"official\"\nsources = [{sources}]\n{extra}"
            )
        };
        let err = book(&row("USD/gigabyte", "\"1\"", "\"acme-pricing\"", ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row[acme.x].unit") && err.contains("unknown unit"),
            "{err}"
        );
        let err = book(&row("USD/GB", "\"1\"", "", "")).unwrap_err().to_string();
        assert!(err.contains("row[acme.x].sources"), "{err}");
        let err = book(&row("USD/GB", "\"1\"", "\"nowhere\"", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no [[source]] with id `nowhere`"), "{err}");
        let err = book(&row("USD/GB", "1.5", "\"acme-pricing\"", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("as strings"), "{err}");
        let unconfirmed = row("USD/GB", "\"1\"", "\"acme-pricing\"", "").replace("\"official\"", "\"unconfirmed\"");
        let err = book(&unconfirmed).unwrap_err().to_string();
        assert!(err.contains("row[acme.x].note"), "{err}");
        let err = PriceBook::from_tables(&[(
            "acme.toml".into(),
            format!("{HEADER}{}", row("USD/GB", "\"1\"", "\"acme-pricing\"", "")).replace("acme.x", "other.x"),
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("start with `acme.`"), "{err}");
    }

    #[test]
    fn tiers_must_ascend_and_end_open() {
        let tiered = |tiers: &str| {
            format!(
                "[[row]]\nid = \"acme.t\"\nkind = \"price\"\nunit = \"USD/GB\"\ntier_mode = \"graduated\"\ntiers = [{tiers}]\neffective_from = \"2024-01-01\"\nconfidence = \"official\"\nsources = [\"acme-pricing\"]\n"
            )
        };
        assert!(
            book(&tiered(
                "{ upto = \"10\", unit_price = \"1\" }, { unit_price = \"0.5\" }"
            ))
            .is_ok()
        );
        let err = book(&tiered(
            "{ upto = \"10\", unit_price = \"1\" }, { upto = \"5\", unit_price = \"0.5\" }, { unit_price = \"0.1\" }",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("row[acme.t].tiers"), "{err}");
    }

    #[test]
    fn builtin_tables_are_valid() {
        let book = PriceBook::builtin().unwrap();
        let summary = book.summary();
        assert_eq!(summary.files.len(), BUILTIN_TABLES.len());
        assert!(summary.rows > 40, "{summary:?}");
    }

    #[test]
    fn builtin_tables_match_the_checked_in_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cost-models");
        let on_disk = PriceBook::load_dir(&dir).unwrap();
        assert_eq!(on_disk.summary().rows, PriceBook::builtin().unwrap().summary().rows);
    }
}
