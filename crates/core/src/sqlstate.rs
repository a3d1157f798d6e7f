//! The one table of PostgreSQL SQLSTATE codes to retry classes, shared by the PostgreSQL
//! source and the coordinator's PostgreSQL state, so the same server answer is retried the
//! same way wherever it comes from. Codes: <https://www.postgresql.org/docs/current/errcodes-appendix.html>.

use crate::ErrorClass;

/// The retry class of a server error by its SQLSTATE, and why:
///
/// - **transient** (retry soon with backoff):
///   - `08xxx` connection exception: the connection broke; a new one usually works.
///   - `40001` serialization_failure, `40P01` deadlock_detected: the transaction lost a race
///     and was rolled back whole; running it again is what the server asks for.
///   - `57P01` admin_shutdown, `57P02` crash_shutdown, `57P03` cannot_connect_now: the server
///     is restarting or recovering.
///   - `57014` query_canceled: a `statement_timeout` or someone's `pg_cancel_backend` stopped
///     the query; the server and the data are fine. A timeout that repeats is bounded by
///     `max_attempts`, and a cancel meant to stop the job should cancel the job instead.
///   - `58xxx` system error (an IO error on the server): the server may recover.
/// - **throttled** (retry after a longer backoff: the server is short of something others use):
///   - `53xxx` insufficient resources: too many connections (`53300`), a configuration limit
///     (`53400`), out of memory (`53200`), disk full (`53100`).
///   - `55P03` lock_not_available: another transaction holds the lock (e.g. `lock_timeout`).
/// - **permanent** (retrying cannot help until someone changes something): everything else,
///   among them `28xxx` authentication, `3D000` unknown database, `42xxx` syntax, undefined
///   table or column and missing privilege, `22xxx` data exceptions, `XX000` internal error.
pub fn class_of(code: &str) -> ErrorClass {
    let class = code.get(..2).unwrap_or("");
    match (class, code) {
        ("08" | "58", _) | (_, "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "57014") => ErrorClass::Transient,
        ("53", _) | (_, "55P03") => ErrorClass::Throttled,
        _ => ErrorClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_code_has_its_class() {
        use ErrorClass::*;
        let table = [
            ("08000", Transient), // connection_exception
            ("08006", Transient), // connection_failure
            ("08001", Transient), // sqlclient_unable_to_establish_sqlconnection
            ("40001", Transient), // serialization_failure
            ("40P01", Transient), // deadlock_detected
            ("57P01", Transient), // admin_shutdown
            ("57P02", Transient), // crash_shutdown
            ("57P03", Transient), // cannot_connect_now
            ("57014", Transient), // query_canceled
            ("58000", Transient), // system_error
            ("58030", Transient), // io_error
            ("53000", Throttled), // insufficient_resources
            ("53100", Throttled), // disk_full
            ("53200", Throttled), // out_of_memory
            ("53300", Throttled), // too_many_connections
            ("53400", Throttled), // configuration_limit_exceeded
            ("55P03", Throttled), // lock_not_available
            ("28000", Permanent), // invalid_authorization_specification
            ("28P01", Permanent), // invalid_password
            ("3D000", Permanent), // invalid_catalog_name
            ("42601", Permanent), // syntax_error
            ("42P01", Permanent), // undefined_table
            ("42703", Permanent), // undefined_column
            ("42501", Permanent), // insufficient_privilege
            ("22003", Permanent), // numeric_value_out_of_range
            ("55000", Permanent), // object_not_in_prerequisite_state
            ("57000", Permanent), // operator_intervention (other than the above)
            ("XX000", Permanent), // internal_error
            ("", Permanent),
        ];
        for (code, class) in table {
            assert_eq!(class_of(code), class, "SQLSTATE {code}");
        }
    }
}
