//! The registry of every connector this build knows, handed to coordinator and workers.

use std::sync::Arc;

use backhaul_core::Result;
use backhaul_core::connector::{Connectors, Destination, Source};
use backhaul_core::spec::{DestinationSpec, SourceSpec};

/// Builds the built-in connectors from spec sections.
pub struct BuiltinConnectors;

impl Connectors for BuiltinConnectors {
    fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn Source>> {
        match spec {
            SourceSpec::Embedded(s) => Ok(Arc::new(backhaul_source_embedded::EmbeddedSource::open(s)?)),
            SourceSpec::Postgres(s) => Ok(Arc::new(backhaul_source_postgres::PostgresSource::open(s)?)),
            SourceSpec::Mysql(s) => Ok(Arc::new(backhaul_source_mysql::MysqlSource::open(s)?)),
        }
    }

    fn destination(&self, spec: &DestinationSpec) -> Result<Arc<dyn Destination>> {
        match spec {
            DestinationSpec::Local(d) => Ok(Arc::new(backhaul_sink_local::LocalTable::new(d)?)),
        }
    }
}
