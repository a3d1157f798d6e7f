//! `[source] kind = "mysql"` (MySQL and MariaDB). Every key is documented in
//! `docs/sources/mysql.md`.

use std::path::Path;
use std::sync::Arc;

use backhaul_core::connector::Source;
use backhaul_core::discover::Catalog;
use backhaul_core::registry::{SourceConfig, SourceKind, TableChoice};
use backhaul_core::spec::{database, parse_section, to_settings};
use backhaul_core::{Error, Result};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// The MySQL source's kind: `[source] kind = "mysql"`.
pub struct MysqlKind;

impl SourceKind for MysqlKind {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn parse(&self, settings: &toml::Table, origin: &str) -> Result<Box<dyn SourceConfig>> {
        Ok(Box::new(parse_section::<MysqlSourceSpec>(settings, "source", origin)?))
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
            let spec = database::parse_connection::<MysqlSourceSpec>(connection, origin, base, |s| &mut s.connection)?;
            let connector = crate::conn::Connector::new(&spec)?;
            let home = spec.connection.database.as_str();
            crate::discover::discover(&connector, schema.unwrap_or(home), home).await
        })
    }
}

backhaul_core::database_source_spec! {
    /// A MySQL or MariaDB table read with one streaming query per chunk. The connection's
    /// `table` is `table` or `database.table`.
    pub struct MysqlSourceSpec {
        /// What to do with zero dates (`0000-00-00`, `2024-00-10`) in DATE, DATETIME and
        /// TIMESTAMP columns.
        #[serde(default, skip_serializing_if = "is_default")]
        pub zero_dates: ZeroDatePolicy,
        /// The Arrow type of `BIGINT UNSIGNED` columns.
        #[serde(default, skip_serializing_if = "is_default")]
        pub unsigned_bigint: UnsignedBigintMapping,
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// `zero_dates`: MySQL can store dates that are no calendar day (`0000-00-00`, or a zero month
/// or day when `NO_ZERO_IN_DATE` is off). No Arrow date or timestamp can hold them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroDatePolicy {
    /// Fail the chunk with an error naming the column and the row's key and cursor (default).
    #[default]
    Error,
    /// Read them as NULL. Date and time columns become nullable, and the type-fidelity report
    /// lists the step as lossy.
    Null,
}

/// `unsigned_bigint`: `BIGINT UNSIGNED` holds values up to 2^64-1, beyond `Int64`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsignedBigintMapping {
    /// Arrow `UInt64` (Parquet `INT(64, unsigned)`), exact (default).
    #[default]
    Uint64,
    /// Arrow `Decimal128(20, 0)`, exact too, for destinations without unsigned integers.
    Decimal,
}

impl MysqlSourceSpec {
    /// Pure checks of this section; `origin` names the file in errors.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let err = |field: &str, message: String| Err(Error::config(origin, field, message));
        let c = &self.connection;
        c.validate(origin)?;
        if !is_plain_name(&c.database) {
            return err("source.database", name_message(&c.database));
        }
        let table_ok = match c.table.split_once('.') {
            Some((schema, table)) => is_plain_name(schema) && is_plain_name(table),
            None => is_plain_name(&c.table),
        };
        if !table_ok {
            return err(
                "source.table",
                format!(
                    "`{}` must be `table` or `database.table`, each part 1-64 characters without `.`, backticks, control characters or surrounding spaces",
                    c.table
                ),
            );
        }
        if !is_plain_name(&c.cursor) {
            return err("source.cursor", name_message(&c.cursor));
        }
        if let Some(columns) = &c.columns {
            if columns.is_empty() {
                return err(
                    "source.columns",
                    "list at least one column, or leave it out for all".into(),
                );
            }
            for (i, col) in columns.iter().enumerate() {
                if !is_plain_name(col) {
                    return err(&format!("source.columns[{i}]"), name_message(col));
                }
                if columns[..i].iter().any(|o| o.eq_ignore_ascii_case(col)) {
                    return err(&format!("source.columns[{i}]"), format!("`{col}` is listed twice"));
                }
            }
            if !columns.iter().any(|col| col.eq_ignore_ascii_case(&c.cursor)) {
                return err(
                    "source.columns",
                    format!("must include the cursor column `{}`", c.cursor),
                );
            }
        }
        Ok(())
    }

    /// `(database, table)`: the table's own database when qualified, else `database`.
    pub fn qualified_table(&self) -> (&str, &str) {
        let c = &self.connection;
        match c.table.split_once('.') {
            Some((schema, table)) => (schema, table),
            None => (&c.database, &c.table),
        }
    }

    /// The port to connect to.
    pub fn port_or_default(&self) -> u16 {
        self.connection.port_or(3306)
    }
}

impl SourceConfig for MysqlSourceSpec {
    fn table(&self) -> &str {
        &self.connection.table
    }

    fn cursor(&self) -> &str {
        &self.connection.cursor
    }

    fn validate(&self, origin: &str) -> Result<()> {
        MysqlSourceSpec::validate(self, origin)
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.connection.resolve_paths(base);
    }

    fn settings(&self) -> toml::Table {
        to_settings(self)
    }

    fn build(&self) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(crate::MysqlSource::open(self)?))
    }
}

/// MySQL identifiers are quoted with backticks, so almost anything goes; backhaul refuses only
/// what cannot be named unambiguously in a dotted `database.table`, or would be invisible.
fn is_plain_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=64).contains(&n) && !name.contains(['.', '`']) && !name.chars().any(char::is_control) && name.trim() == name
}

fn name_message(name: &str) -> String {
    format!(
        "`{name}` is not a usable name: 1-64 characters without `.`, backticks, control characters or surrounding spaces"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use backhaul_core::spec::database::{ConnectionSpec, NullCursorPolicy, PasswordSpec, TlsSpec};

    fn spec() -> MysqlSourceSpec {
        MysqlSourceSpec {
            connection: ConnectionSpec {
                host: "127.0.0.1".into(),
                port: None,
                user: "loader".into(),
                database: "shop".into(),
                password: PasswordSpec::default(),
                table: "orders".into(),
                cursor: "created_at".into(),
                columns: None,
                tls: TlsSpec::default(),
                null_cursor: NullCursorPolicy::Fail,
            },
            zero_dates: ZeroDatePolicy::Error,
            unsigned_bigint: UnsignedBigintMapping::Uint64,
        }
    }

    fn field_of(s: &MysqlSourceSpec) -> String {
        match s.validate("job.toml").unwrap_err() {
            Error::Config { field, .. } => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn accepts_plain_and_qualified_tables() {
        let mut s = spec();
        s.validate("job.toml").unwrap();
        assert_eq!(s.qualified_table(), ("shop", "orders"));
        s.connection.table = "tpch.line item".into();
        s.validate("job.toml").unwrap();
        assert_eq!(s.qualified_table(), ("tpch", "line item"));
    }

    #[test]
    fn names_the_bad_field() {
        let mut s = spec();
        s.connection.table = "a.b.c".into();
        assert_eq!(field_of(&s), "source.table");
        let mut s = spec();
        s.connection.cursor = "x`y".into();
        assert_eq!(field_of(&s), "source.cursor");
        let mut s = spec();
        s.connection.columns = Some(vec!["id".into(), "ID".into(), "created_at".into()]);
        assert_eq!(field_of(&s), "source.columns[1]");
        let mut s = spec();
        s.connection.columns = Some(vec!["id".into()]);
        assert_eq!(field_of(&s), "source.columns");
        let mut s = spec();
        s.connection.port = Some(0);
        assert_eq!(field_of(&s), "source.port");
    }

    #[test]
    fn policies_parse_and_default() {
        let text = r#"
host = "db"
user = "u"
database = "d"
table = "t"
cursor = "c"
zero_dates = "null"
unsigned_bigint = "decimal"
"#;
        let s: MysqlSourceSpec = toml::from_str(text).unwrap();
        assert_eq!(s.zero_dates, ZeroDatePolicy::Null);
        assert_eq!(s.unsigned_bigint, UnsignedBigintMapping::Decimal);
        let s: MysqlSourceSpec = toml::from_str("host='h'\nuser='u'\ndatabase='d'\ntable='t'\ncursor='c'").unwrap();
        assert_eq!(s.zero_dates, ZeroDatePolicy::Error);
        // Defaults stay out of the canonical spec, so specs written before these keys existed
        // compare equal on resume.
        assert!(!toml::to_string(&s).unwrap().contains("zero_dates"));
        assert!(
            toml::from_str::<MysqlSourceSpec>(
                "host='h'\nuser='u'\ndatabase='d'\ntable='t'\ncursor='c'\nzero_dates='zero'"
            )
            .is_err()
        );
    }
}
