//! Pieces shared by the database sources (`kind = "postgres"`, `kind = "mysql"`): where the
//! password comes from, TLS, and what to do with rows whose cursor is NULL.
//!
//! Secrets are never part of the spec itself: the spec names an environment variable or a file,
//! and the connector reads it at build time. That keeps the canonical spec stored by the
//! coordinator free of secrets.

use std::path::PathBuf;

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

/// `null_cursor`: rows whose cursor column is NULL fall in no time range, so they need a rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NullCursorPolicy {
    /// Refuse the job with an error naming the column when any row has a NULL cursor (default,
    /// and today the only rule: a rule that loads them needs the job's range in the source).
    #[default]
    Fail,
}
