//! The connector kinds this build knows, handed to coordinator and workers.
//!
//! Each connector crate owns its `[source]`/`[destination]` section (struct, validation, docs);
//! adding one is a dependency plus one line below.

use backhaul_core::registry::Registry;

/// Every built-in connector kind, one registration line each.
pub fn builtin_connectors() -> Registry {
    Registry::new()
        .source(backhaul_source_embedded::EmbeddedKind)
        .source(backhaul_source_postgres::PostgresKind)
        .source(backhaul_source_mysql::MysqlKind)
        .destination(backhaul_sink_local::LocalKind)
}
