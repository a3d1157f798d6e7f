//! `[source] kind = "mysql"` (MySQL and MariaDB).

use serde::{Deserialize, Serialize};

use super::database::{NullCursorPolicy, PasswordSpec, TlsSpec};

/// A MySQL or MariaDB table read with one streaming query per chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSourceSpec {
    /// Server host name or address.
    pub host: String,
    /// Server port; default 3306.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Database user.
    pub user: String,
    /// Database name.
    pub database: String,
    /// Where the password comes from (`[source.password] env = ...` or `file = ...`).
    #[serde(default)]
    pub password: PasswordSpec,
    /// Table, optionally schema-qualified: `lineitem` or `tpch.lineitem`.
    pub table: String,
    /// Cursor column that bounds chunks.
    pub cursor: String,
    /// Columns to extract, in order; default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// TLS to the server.
    #[serde(default)]
    pub tls: TlsSpec,
    /// What to do with rows whose cursor is NULL.
    #[serde(default)]
    pub null_cursor: NullCursorPolicy,
}

impl MysqlSourceSpec {
    /// Pure checks of this section; `origin` names the file in errors.
    pub fn validate(&self, origin: &str) -> crate::Result<()> {
        self.password.validate(origin, "source.password")
    }
}
