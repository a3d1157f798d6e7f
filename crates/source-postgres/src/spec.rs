//! `[source] kind = "postgres"`.
//!
//! Besides the connection ([`ConnectionSpec`](backhaul_core::spec::database::ConnectionSpec)), the section holds the type policies: what to do
//! with values Arrow cannot hold exactly (unconstrained `numeric`, infinite dates and
//! timestamps, `NaN` numerics). Each defaults to an error naming the column, so nothing is
//! coerced unless the user opted in; an opt-in shows up as the column's lossy step in the job's
//! type-fidelity report. Every key is documented in `docs/sources/postgres.md`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use backhaul_core::connector::Source;
use backhaul_core::discover::Catalog;
use backhaul_core::registry::{SourceConfig, SourceKind, TableChoice};
use backhaul_core::spec::{database, parse_section, to_settings};
use backhaul_core::{Error, Result};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// The PostgreSQL source's kind: `[source] kind = "postgres"`.
pub struct PostgresKind;

impl SourceKind for PostgresKind {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn parse(&self, settings: &toml::Table, origin: &str) -> Result<Box<dyn SourceConfig>> {
        Ok(Box::new(parse_section::<PostgresSourceSpec>(
            settings, "source", origin,
        )?))
    }

    fn table_settings(&self, connection: &toml::Table, table: &TableChoice, origin: &str) -> Result<toml::Table> {
        database::table_settings(connection, table, origin)
    }

    fn discover<'a>(
        &'a self,
        connection: &'a toml::Table,
        origin: &'a str,
        base: &'a Path,
        schema: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Catalog>> {
        Box::pin(async move {
            let spec =
                database::parse_connection::<PostgresSourceSpec>(connection, origin, base, |s| &mut s.connection)?;
            let connector = crate::connect::Connector::new(&spec)?;
            crate::discover::discover(&connector, schema.unwrap_or(DEFAULT_SCHEMA)).await
        })
    }
}

/// The schema `discover` reads when none is named.
pub const DEFAULT_SCHEMA: &str = "public";

backhaul_core::database_source_spec! {
    /// A PostgreSQL table read with binary `COPY`. The connection's `host` may also be the
    /// directory of a Unix socket (`/var/run/postgresql`); `table` parts are read as SQL
    /// identifiers (unquoted parts fold to lower case, `"Quoted"` parts are kept as written); the
    /// cursor is a timestamp, timestamptz, date, smallint, integer or bigint column.
    pub struct PostgresSourceSpec {
        /// How `numeric` columns declared without precision are read; default `error`.
        #[serde(default, skip_serializing_if = "is_default")]
        pub unconstrained_numeric: UnconstrainedNumeric,
        /// What an `infinity`/`-infinity` date or timestamp becomes; default `error`.
        #[serde(default, skip_serializing_if = "is_default")]
        pub infinite_datetime: InfiniteDatetime,
        /// What a `NaN`/`Infinity`/`-Infinity` numeric becomes; default `error`.
        #[serde(default, skip_serializing_if = "is_default")]
        pub special_numeric: SpecialNumeric,
        /// How many block-range scans, in one snapshot, read a chunk that PostgreSQL would
        /// read with a sequential scan (a cursor that does not follow the physical order);
        /// 1 turns splitting off. Default 2; PostgreSQL 14+ and plain tables only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub parallel_scans: Option<u32>,
    }
}

/// `parallel_scans` when the key is absent: two scans keep two cores of the server and of
/// the worker busy on one chunk (docs/benchmarks.md, 2026-12-05 block-range scans).
pub const DEFAULT_PARALLEL_SCANS: u32 = 2;

/// The most `parallel_scans`: each is a connection and a decoding thread.
pub const MAX_PARALLEL_SCANS: u32 = 16;

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `unconstrained_numeric`: a `numeric` column without declared precision can hold up to 131072
/// digits before the point, which no Arrow decimal holds. Detected per column at describe time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum UnconstrainedNumeric {
    /// `"error"`: refuse the job at describe time, naming the column and this key (default).
    #[default]
    Error,
    /// `"text"`: the exact decimal text (`Utf8`), e.g. `-12.3400`; never rounded.
    Text,
    /// `"decimal(P,S)"`: `Decimal128(P,S)` (P ≤ 38) or `Decimal256(P,S)` (P ≤ 76). A value with
    /// more than S fractional digits or more than P - S integer digits fails the chunk with an
    /// error naming the column: nothing is rounded.
    Decimal {
        /// Total digits, 1..=76.
        precision: u8,
        /// Digits after the point, 0..=precision.
        scale: u8,
    },
}

impl fmt::Display for UnconstrainedNumeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnconstrainedNumeric::Error => f.write_str("error"),
            UnconstrainedNumeric::Text => f.write_str("text"),
            UnconstrainedNumeric::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
        }
    }
}

impl From<UnconstrainedNumeric> for String {
    fn from(v: UnconstrainedNumeric) -> String {
        v.to_string()
    }
}

impl TryFrom<String> for UnconstrainedNumeric {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Self, String> {
        let t = text.trim().to_ascii_lowercase();
        match t.as_str() {
            "error" => return Ok(UnconstrainedNumeric::Error),
            "text" => return Ok(UnconstrainedNumeric::Text),
            _ => {}
        }
        let bad = || format!("`{text}` is not one of \"error\", \"text\" or \"decimal(P,S)\" (e.g. \"decimal(38,9)\")");
        let inner = t
            .strip_prefix("decimal")
            .and_then(|r| r.trim().strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(bad)?;
        let (p, s) = inner.split_once(',').ok_or_else(bad)?;
        let precision: u8 = p.trim().parse().map_err(|_| bad())?;
        let scale: u8 = s.trim().parse().map_err(|_| bad())?;
        if !(1..=76).contains(&precision) || scale > precision {
            return Err(format!(
                "`{text}`: precision must be 1 to 76 and scale 0 to the precision"
            ));
        }
        Ok(UnconstrainedNumeric::Decimal { precision, scale })
    }
}

/// `infinite_datetime`: PostgreSQL dates and timestamps can be `infinity` or `-infinity`, which
/// no Arrow date or timestamp holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InfiniteDatetime {
    /// Fail the chunk with an error naming the column and the row (default).
    #[default]
    Error,
    /// Read them as NULL.
    Null,
    /// Read `infinity` as 9999-12-31 (23:59:59.999999) and `-infinity` as 0001-01-01
    /// (00:00:00), the range every warehouse accepts.
    Clamp,
}

/// `special_numeric`: a `numeric` can be `NaN` (and, since PostgreSQL 14, `Infinity` or
/// `-Infinity`), which no Arrow decimal holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialNumeric {
    /// Fail the chunk with an error naming the column and the row (default).
    #[default]
    Error,
    /// Read them as NULL.
    Null,
}

impl PostgresSourceSpec {
    /// Pure checks of this section; `origin` names the file in errors.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let err = |field: &str, msg: String| Error::config(origin, field, msg);
        let c = &self.connection;
        c.validate(origin)?;
        for (field, value) in [
            ("source.database", &c.database),
            ("source.table", &c.table),
            ("source.cursor", &c.cursor),
        ] {
            if value.trim().is_empty() {
                return Err(err(field, "must not be empty".into()));
            }
        }
        if let Some(columns) = &c.columns {
            if columns.is_empty() {
                return Err(err(
                    "source.columns",
                    "must list at least the cursor column; leave it out to extract every column".into(),
                ));
            }
            for (i, col) in columns.iter().enumerate() {
                if col.is_empty() {
                    return Err(err("source.columns", format!("entry {} is empty", i + 1)));
                }
                if columns[..i].contains(col) {
                    return Err(err("source.columns", format!("`{col}` is listed twice")));
                }
            }
            if !columns.contains(&c.cursor) {
                return Err(err(
                    "source.columns",
                    format!("must include the cursor column `{}`", c.cursor),
                ));
            }
        }
        if let Some(scans) = self.parallel_scans
            && !(1..=MAX_PARALLEL_SCANS).contains(&scans)
        {
            return Err(err(
                "source.parallel_scans",
                format!("{scans} is not 1 to {MAX_PARALLEL_SCANS} (1 reads every chunk with one scan)"),
            ));
        }
        Ok(())
    }

    /// `parallel_scans`, or its default.
    pub fn parallel_scans_or_default(&self) -> usize {
        self.parallel_scans.unwrap_or(DEFAULT_PARALLEL_SCANS) as usize
    }

    /// The port to connect to.
    pub fn port_or_default(&self) -> u16 {
        self.connection.port_or(5432)
    }
}

impl SourceConfig for PostgresSourceSpec {
    fn table(&self) -> &str {
        &self.connection.table
    }

    fn cursor(&self) -> &str {
        &self.connection.cursor
    }

    fn validate(&self, origin: &str) -> Result<()> {
        PostgresSourceSpec::validate(self, origin)
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.connection.resolve_paths(base);
    }

    fn settings(&self) -> toml::Table {
        to_settings(self)
    }

    fn build(&self) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(crate::PostgresSource::open(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> std::result::Result<PostgresSourceSpec, String> {
        let text =
            format!("host = \"db\"\nuser = \"u\"\ndatabase = \"d\"\ntable = \"public.t\"\ncursor = \"ts\"\n{extra}");
        let settings: toml::Table = toml::from_str(&text).map_err(|e| e.to_string())?;
        parse_section(&settings, "source", "job.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn policies_default_to_error_and_stay_out_of_canonical_toml() {
        let s = spec("").unwrap();
        assert_eq!(s.unconstrained_numeric, UnconstrainedNumeric::Error);
        assert_eq!(s.infinite_datetime, InfiniteDatetime::Error);
        assert_eq!(s.special_numeric, SpecialNumeric::Error);
        let text = toml::to_string(&s).unwrap();
        assert!(!text.contains("numeric") && !text.contains("infinite"), "{text}");
        s.validate("job.toml").unwrap();
    }

    #[test]
    fn parses_policies() {
        let s = spec(
            "unconstrained_numeric = \"decimal(38, 9)\"\ninfinite_datetime = \"clamp\"\nspecial_numeric = \"null\"",
        )
        .unwrap();
        assert_eq!(
            s.unconstrained_numeric,
            UnconstrainedNumeric::Decimal {
                precision: 38,
                scale: 9
            }
        );
        assert_eq!(s.infinite_datetime, InfiniteDatetime::Clamp);
        assert_eq!(s.special_numeric, SpecialNumeric::Null);
        let back: PostgresSourceSpec = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            spec("unconstrained_numeric = \"text\"").unwrap().unconstrained_numeric,
            UnconstrainedNumeric::Text
        );
        for bad in ["float", "decimal(77,2)", "decimal(5,6)", "decimal(0,0)", "decimal(38)"] {
            let e = spec(&format!("unconstrained_numeric = \"{bad}\"")).unwrap_err();
            assert!(e.contains(bad.split('(').next().unwrap()), "{e}");
        }
        assert!(spec("infinite_datetime = \"zero\"").is_err());
    }

    #[test]
    fn validates_columns_and_tls() {
        let s = spec("columns = [\"a\"]").unwrap();
        let e = s.validate("job.toml").unwrap_err().to_string();
        assert!(e.contains("source.columns") && e.contains("cursor column `ts`"), "{e}");
        let s = spec("columns = [\"ts\", \"a\", \"a\"]").unwrap();
        assert!(s.validate("job.toml").unwrap_err().to_string().contains("twice"));
        let s = spec("[tls]\nca_file = \"ca.pem\"").unwrap();
        let e = s.validate("job.toml").unwrap_err().to_string();
        assert!(e.contains("source.tls.ca_file"), "{e}");
        let s = spec("[tls]\nmode = \"verify_full\"\nca_file = \"ca.pem\"").unwrap();
        s.validate("job.toml").unwrap();
        let mut s = spec("").unwrap();
        s.connection.host = " ".into();
        assert!(s.validate("job.toml").unwrap_err().to_string().contains("source.host"));
        for bad in [0, 17] {
            let s = spec(&format!("parallel_scans = {bad}")).unwrap();
            let e = s.validate("job.toml").unwrap_err().to_string();
            assert!(
                e.contains("job.toml") && e.contains("source.parallel_scans") && e.contains("1 to 16"),
                "{e}"
            );
        }
        let s = spec("parallel_scans = 4").unwrap();
        s.validate("job.toml").unwrap();
        assert_eq!(s.parallel_scans_or_default(), 4);
        assert_eq!(spec("").unwrap().parallel_scans_or_default(), 2);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = spec("hots = \"x\"").unwrap_err();
        assert!(e.starts_with("job.toml: source.hots: unknown field `hots`"), "{e}");
        assert!(e.contains("`host`") && e.contains("`special_numeric`"), "{e}");
        let e = spec("[tls]\nmod = \"disable\"").unwrap_err();
        assert!(e.starts_with("job.toml: source.tls.mod: unknown field"), "{e}");
        let e = spec("port = \"x\"").unwrap_err();
        assert!(e.starts_with("job.toml: source.port: "), "{e}");
    }
}
