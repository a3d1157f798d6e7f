//! `[source] kind = "postgres"`.

use serde::{Deserialize, Serialize};

use super::database::{NullCursorPolicy, PasswordSpec, TlsSpec};

/// A PostgreSQL table read with binary `COPY`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceSpec {
    /// Server host name or address.
    pub host: String,
    /// Server port; default 5432.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Database user.
    pub user: String,
    /// Database name.
    pub database: String,
    /// Where the password comes from (`[source.password] env = ...` or `file = ...`).
    #[serde(default)]
    pub password: PasswordSpec,
    /// Table, optionally schema-qualified: `lineitem` or `public.lineitem`.
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

impl PostgresSourceSpec {
    /// Pure checks of this section; `origin` names the file in errors.
    pub fn validate(&self, origin: &str) -> crate::Result<()> {
        self.password.validate(origin, "source.password")
    }
}
