//! MySQL and MariaDB source (work in progress, issue 3).

use backhaul_core::chunking::DensityBucket;
use backhaul_core::connector::{BatchStream, Source, TableDescription};
use backhaul_core::cursor::CursorRange;
use backhaul_core::spec::mysql::MysqlSourceSpec;
use backhaul_core::{Error, Result};
use futures::future::BoxFuture;

/// A MySQL or MariaDB table.
pub struct MysqlSource {
    spec: MysqlSourceSpec,
}

impl MysqlSource {
    /// Builds the source from its spec section.
    pub fn open(spec: &MysqlSourceSpec) -> Result<Self> {
        Ok(Self { spec: spec.clone() })
    }

    fn unsupported(&self) -> Error {
        Error::InvalidObject {
            object: format!("mysql table {}", self.spec.table),
            message: "the mysql source is not built yet".into(),
        }
    }
}

impl Source for MysqlSource {
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
