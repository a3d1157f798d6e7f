//! PostgreSQL source (work in progress, issue 3).

use backhaul_core::chunking::DensityBucket;
use backhaul_core::connector::{BatchStream, Source, TableDescription};
use backhaul_core::cursor::CursorRange;
use backhaul_core::spec::postgres::PostgresSourceSpec;
use backhaul_core::{Error, Result};
use futures::future::BoxFuture;

/// A PostgreSQL table.
pub struct PostgresSource {
    spec: PostgresSourceSpec,
}

impl PostgresSource {
    /// Builds the source from its spec section.
    pub fn open(spec: &PostgresSourceSpec) -> Result<Self> {
        Ok(Self { spec: spec.clone() })
    }

    fn unsupported(&self) -> Error {
        Error::InvalidObject {
            object: format!("postgres table {}", self.spec.table),
            message: "the postgres source is not built yet".into(),
        }
    }
}

impl Source for PostgresSource {
    fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
        Box::pin(async { Err(self.unsupported()) })
    }
    fn density(&self, _range: CursorRange) -> BoxFuture<'_, Result<Vec<DensityBucket>>> {
        Box::pin(async { Err(self.unsupported()) })
    }
    fn extract(&self, _range: CursorRange, _batch_rows: usize) -> BoxFuture<'_, Result<BatchStream>> {
        Box::pin(async { Err(self.unsupported()) })
    }
}
