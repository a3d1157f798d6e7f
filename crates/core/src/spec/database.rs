//! Pieces shared by the database sources (`kind = "postgres"`, `kind = "mysql"`): the
//! connection keys ([`ConnectionSpec`]), where the password comes from, TLS, and what to do with
//! rows whose cursor is NULL. A database source declares its section with
//! [`database_source_spec!`](crate::database_source_spec): the connection keys plus its own.
//!
//! Secrets are never part of the spec itself: the spec names an environment variable or a file,
//! and the connector reads it at build time. That keeps the canonical spec stored by the
//! coordinator free of secrets.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `[source.password]`: where a database password comes from. At most one of the two may be set; with neither, the
/// connection is made without a password (trust or socket-peer authentication).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSpec {
    /// Name of an environment variable holding the password, e.g. `PGPASSWORD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// File whose contents (trailing newline removed) are the password, e.g. a mounted secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl PasswordSpec {
    /// Pure check: not both sources at once, no empty names.
    pub fn validate(&self, origin: &str, prefix: &str) -> Result<()> {
        match (&self.env, &self.file) {
            (Some(_), Some(_)) => Err(Error::config(
                origin,
                format!("{prefix}.env"),
                "set either `env` or `file`, not both",
            )),
            (Some(v), None) if v.trim().is_empty() => Err(Error::config(
                origin,
                format!("{prefix}.env"),
                "must name an environment variable",
            )),
            (None, Some(p)) if p.as_os_str().is_empty() => {
                Err(Error::config(origin, format!("{prefix}.file"), "must not be empty"))
            }
            _ => Ok(()),
        }
    }

    /// Reads the password (IO: environment or file). `prefix` names the spec section in errors.
    pub fn read(&self, origin: &str, prefix: &str) -> Result<Option<String>> {
        if let Some(var) = &self.env {
            return match std::env::var(var) {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(Error::config(
                    origin,
                    format!("{prefix}.env"),
                    format!("environment variable `{var}` is not set"),
                )),
            };
        }
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
        }
        Ok(None)
    }
}

/// `tls.mode`: how the connection to the database is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain TCP. Only for loopback and trusted networks.
    #[default]
    Disable,
    /// TLS required; the server certificate is checked against the CA and the host name.
    VerifyFull,
    /// TLS required; the certificate chain is checked but not the host name.
    VerifyCa,
}

/// `[source.tls]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// `disable` (default), `verify_full` or `verify_ca`.
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM file of the CA(s) to trust; without it the platform's web roots are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// The keys every database source's `[source]` section starts with, in canonical order.
///
/// They sit at the top level of the section beside the kind's own keys; serde's `flatten` would
/// lose `deny_unknown_fields` and the key path of errors, so [`database_source_spec!`] parses the
/// section through one flat struct instead and moves these fields here.
///
/// [`database_source_spec!`]: crate::database_source_spec
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSpec {
    /// Server host name or address (PostgreSQL: also a Unix socket directory).
    pub host: String,
    /// Server port; `None` for the kind's default.
    pub port: Option<u16>,
    /// Database user.
    pub user: String,
    /// Database name.
    pub database: String,
    /// Where the password comes from (`[source.password] env = ...` or `file = ...`).
    pub password: PasswordSpec,
    /// Table, optionally qualified: `lineitem` or `schema.lineitem`.
    pub table: String,
    /// Cursor column that bounds chunks.
    pub cursor: String,
    /// Columns to extract, in order; `None` for all. Must include the cursor.
    pub columns: Option<Vec<String>>,
    /// TLS to the server.
    pub tls: TlsSpec,
    /// What to do with rows whose cursor is NULL.
    pub null_cursor: NullCursorPolicy,
}

impl ConnectionSpec {
    /// Pure checks every database source shares: a host, a port, a user, a coherent TLS
    /// setting and password source. Names (database, table, cursor, columns) follow each
    /// database's own rules, so the kind checks them. `origin` names the file in errors.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let err = |field: &str, message: &str| Err(Error::config(origin, field, message));
        if self.host.trim().is_empty() {
            return err("source.host", "must not be empty");
        }
        if self.port == Some(0) {
            return err("source.port", "must be 1-65535");
        }
        if self.user.trim().is_empty() {
            return err("source.user", "must not be empty");
        }
        if self.tls.mode == TlsMode::Disable && self.tls.ca_file.is_some() {
            return err(
                "source.tls.ca_file",
                "is set but `tls.mode` is `disable`; set `mode = \"verify_full\"` (or `verify_ca`)",
            );
        }
        if let Some(p) = &self.tls.ca_file
            && p.as_os_str().is_empty()
        {
            return err("source.tls.ca_file", "must not be empty");
        }
        self.password.validate(origin, "source.password")
    }

    /// Makes the password and CA files relative to `base` (the spec file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &mut self.password.file {
            super::resolve_path(p, base);
        }
        if let Some(p) = &mut self.tls.ca_file {
            super::resolve_path(p, base);
        }
    }

    /// The port to connect to: the configured one, else the kind's `default`.
    pub fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }
}

/// The `[source]` section of one table of a pipeline, for every database kind: the
/// connection keys with `table`, `cursor` and `columns` set from `choice`
/// ([`SourceKind::table_settings`](crate::registry::SourceKind::table_settings)). A pipeline's
/// `[source]` that names any of those itself is refused: they belong to its tables.
pub fn table_settings(
    connection: &toml::Table,
    choice: &crate::registry::TableChoice,
    origin: &str,
) -> Result<toml::Table> {
    if let Some(key) = ["table", "cursor", "columns"]
        .into_iter()
        .find(|k| connection.contains_key(*k))
    {
        return Err(Error::config(
            origin,
            format!("source.{key}"),
            "a pipeline's [source] holds the connection only; name tables, cursors and blocked columns in [[tables]]",
        ));
    }
    let mut settings = connection.clone();
    settings.insert("table".into(), toml::Value::String(choice.table.clone()));
    settings.insert("cursor".into(), toml::Value::String(choice.cursor.clone()));
    if let Some(columns) = &choice.columns {
        let list = columns.iter().map(|c| toml::Value::String(c.clone())).collect();
        settings.insert("columns".into(), toml::Value::Array(list));
    }
    Ok(settings)
}

/// A database kind's section parsed from connection-only settings (a pipeline's or
/// `discover`'s `[source]`), validated and with paths made relative to `base`, for catalog
/// queries. Its table and cursor are placeholders nobody reads.
pub fn parse_connection<T: serde::de::DeserializeOwned>(
    connection: &toml::Table,
    origin: &str,
    base: &Path,
    connection_of: impl Fn(&mut T) -> &mut ConnectionSpec,
) -> Result<T> {
    let placeholder = crate::registry::TableChoice {
        table: "-".into(),
        cursor: "-".into(),
        columns: None,
    };
    let settings = table_settings(connection, &placeholder, origin)?;
    let mut spec: T = super::parse_section(&settings, "source", origin)?;
    let c = connection_of(&mut spec);
    c.validate(origin)?;
    c.resolve_paths(base);
    Ok(spec)
}

/// Declares a database source's spec struct: a `connection: ConnectionSpec` field followed by
/// the kind's own fields, parsed from and written to one flat section (the connection keys
/// first, in [`ConnectionSpec`]'s order) with `deny_unknown_fields`, so an unknown key is refused
/// by name and errors keep their key path.
///
/// Each own field takes doc comments, then at most one `#[serde(...)]` attribute that applies
/// to the flat section.
///
/// ```ignore
/// backhaul_core::database_source_spec! {
///     /// `[source] kind = "example"`.
///     pub struct ExampleSourceSpec {
///         /// An option of this kind only.
///         #[serde(default)]
///         pub fast: bool,
///     }
/// }
/// ```
#[macro_export]
macro_rules! database_source_spec {
    (
        $(#[doc = $doc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $fdoc:literal])*
                $(#[serde($($fserde:tt)*)])?
                pub $field:ident : $ty:ty,
            )*
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            /// The keys every database source shares.
            pub connection: $crate::spec::database::ConnectionSpec,
            $(
                $(#[doc = $fdoc])*
                pub $field: $ty,
            )*
        }

        const _: () = {
            use $crate::spec::database::{ConnectionSpec, NullCursorPolicy, PasswordSpec, TlsSpec};

            /// The section as written: connection keys, then the kind's own.
            #[derive(serde::Serialize, serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Flat {
                host: String,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                port: Option<u16>,
                user: String,
                database: String,
                #[serde(default)]
                password: PasswordSpec,
                table: String,
                cursor: String,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                columns: Option<Vec<String>>,
                #[serde(default)]
                tls: TlsSpec,
                #[serde(default)]
                null_cursor: NullCursorPolicy,
                $(
                    $(#[serde($($fserde)*)])?
                    $field: $ty,
                )*
            }

            impl serde::Serialize for $name {
                fn serialize<S: serde::Serializer>(&self, serializer: S) -> ::std::result::Result<S::Ok, S::Error> {
                    let c = self.connection.clone();
                    Flat {
                        host: c.host,
                        port: c.port,
                        user: c.user,
                        database: c.database,
                        password: c.password,
                        table: c.table,
                        cursor: c.cursor,
                        columns: c.columns,
                        tls: c.tls,
                        null_cursor: c.null_cursor,
                        $($field: self.$field.clone(),)*
                    }
                    .serialize(serializer)
                }
            }

            impl<'de> serde::Deserialize<'de> for $name {
                fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> ::std::result::Result<Self, D::Error> {
                    let f = Flat::deserialize(deserializer)?;
                    Ok($name {
                        connection: ConnectionSpec {
                            host: f.host,
                            port: f.port,
                            user: f.user,
                            database: f.database,
                            password: f.password,
                            table: f.table,
                            cursor: f.cursor,
                            columns: f.columns,
                            tls: f.tls,
                            null_cursor: f.null_cursor,
                        },
                        $($field: f.$field,)*
                    })
                }
            }
        };
    };
}

/// `null_cursor`: rows whose cursor column is NULL fall in no time range, so they need a rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NullCursorPolicy {
    /// Refuse the job with an error naming the column when any row has a NULL cursor (default,
    /// and today the only rule: a rule that loads them needs the job's range in the source).
    #[default]
    Fail,
}
