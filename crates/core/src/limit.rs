//! A limit on the source connections a process opens for a group of jobs (a pipeline's
//! `max_source_connections`): one permit pool shared by every job's sources.
//!
//! [`LimitedConnectors`] wraps a [`Connectors`] so that every source it builds takes a permit
//! for each operation that opens a connection: describe, prepare, density and physical order
//! for the length of the call, an extraction for the life of its batch stream. Database sources
//! open one connection per operation, so permits held bound connections open.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::chunking::{DensityBucket, PhysicalOrder};
use crate::connector::{BatchStream, RequestProfile, Source, TableDescription};
use crate::cursor::CursorRange;
use crate::deletes::KeyDigest;
use crate::error::{Error, Result};
use crate::notes::{BreakerReport, ExtractNotes};
use crate::profile::{Activity, ActivityQuery};
use crate::registry::{Connectors, DestinationConfig, DestinationKind, SourceConfig, SourceKind};
use crate::spec::ConnectorSection;

/// A pool of source-connection permits shared by the jobs of one pipeline.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConnectionLimit {
    /// At most `max` (at least one) source connections at once.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        ConnectionLimit {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Waits for a permit; hold it while one connection is open.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("the source connection limit was closed".into()))
    }
}

/// Connectors whose sources share one [`ConnectionLimit`].
pub struct LimitedConnectors {
    inner: Arc<dyn Connectors>,
    limit: ConnectionLimit,
}

impl LimitedConnectors {
    /// Wraps `inner`; every source it builds draws from `limit`.
    pub fn new(inner: Arc<dyn Connectors>, limit: ConnectionLimit) -> Self {
        LimitedConnectors { inner, limit }
    }
}

impl Connectors for LimitedConnectors {
    fn source_config(&self, section: &ConnectorSection, origin: &str) -> Result<Box<dyn SourceConfig>> {
        Ok(Box::new(LimitedConfig {
            inner: self.inner.source_config(section, origin)?,
            limit: self.limit.clone(),
        }))
    }

    fn destination_config(&self, section: &ConnectorSection, origin: &str) -> Result<Box<dyn DestinationConfig>> {
        self.inner.destination_config(section, origin)
    }

    fn source_kind_of(&self, section: &ConnectorSection, origin: &str) -> Result<&dyn SourceKind> {
        self.inner.source_kind_of(section, origin)
    }

    fn destination_kind_of(&self, section: &ConnectorSection, origin: &str) -> Result<&dyn DestinationKind> {
        self.inner.destination_kind_of(section, origin)
    }
}

struct LimitedConfig {
    inner: Box<dyn SourceConfig>,
    limit: ConnectionLimit,
}

impl fmt::Debug for LimitedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl SourceConfig for LimitedConfig {
    fn table(&self) -> &str {
        self.inner.table()
    }
    fn cursor(&self) -> &str {
        self.inner.cursor()
    }
    fn validate(&self, origin: &str) -> Result<()> {
        self.inner.validate(origin)
    }
    fn resolve_paths(&mut self, base: &Path) {
        self.inner.resolve_paths(base);
    }
    fn set_job_name(&mut self, job_name: &str) {
        self.inner.set_job_name(job_name);
    }
    fn settings(&self) -> toml::Table {
        self.inner.settings()
    }
    fn build(&self) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(LimitedSource {
            inner: self.inner.build()?,
            limit: self.limit.clone(),
        }))
    }
}

/// A source whose connections are counted against a [`ConnectionLimit`]. It forwards every
/// [`Source`] method, defaults included: a method added to the trait must be added here, or a
/// pipeline's sources would answer with the trait's default.
struct LimitedSource {
    inner: Arc<dyn Source>,
    limit: ConnectionLimit,
}

impl Source for LimitedSource {
    fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
        Box::pin(async move {
            let _permit = self.limit.acquire().await?;
            self.inner.describe().await
        })
    }

    fn prepare(&self, range: CursorRange) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let _permit = self.limit.acquire().await?;
            self.inner.prepare(range).await
        })
    }

    fn density(&self, range: CursorRange) -> BoxFuture<'_, Result<Vec<DensityBucket>>> {
        Box::pin(async move {
            let _permit = self.limit.acquire().await?;
            self.inner.density(range).await
        })
    }

    fn physical_order(&self) -> BoxFuture<'_, Result<Option<PhysicalOrder>>> {
        Box::pin(async move {
            let _permit = self.limit.acquire().await?;
            self.inner.physical_order().await
        })
    }

    fn extract(&self, range: CursorRange, batch_rows: usize) -> BoxFuture<'_, Result<BatchStream>> {
        Box::pin(async move {
            let permit = self.limit.acquire().await?;
            let stream = self.inner.extract(range, batch_rows).await?;
            Ok(hold_while_streaming(stream, permit))
        })
    }

    fn extract_with_notes(
        &self,
        range: CursorRange,
        batch_rows: usize,
        notes: ExtractNotes,
    ) -> BoxFuture<'_, Result<BatchStream>> {
        Box::pin(async move {
            let permit = self.limit.acquire().await?;
            let stream = self.inner.extract_with_notes(range, batch_rows, notes).await?;
            Ok(hold_while_streaming(stream, permit))
        })
    }

    fn circuit_breaker(&self) -> Option<BreakerReport> {
        self.inner.circuit_breaker()
    }

    fn activity(&self, query: ActivityQuery) -> BoxFuture<'_, Result<Option<Activity>>> {
        Box::pin(async move {
            let _permit = self.limit.acquire().await?;
            self.inner.activity(query).await
        })
    }

    fn request_profile(&self) -> Option<RequestProfile> {
        self.inner.request_profile()
    }

    fn max_cursor(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async move {
            let _permit = self.limit.acquire().await?;
            self.inner.max_cursor().await
        })
    }

    fn supports_delete_detection(&self) -> bool {
        self.inner.supports_delete_detection()
    }

    fn key_digest<'a>(&'a self, range: CursorRange, keys: &'a [String]) -> BoxFuture<'a, Result<KeyDigest>> {
        Box::pin(async move {
            let _permit = self.limit.acquire().await?;
            self.inner.key_digest(range, keys).await
        })
    }

    fn list_keys<'a>(&'a self, range: CursorRange, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let _permit = self.limit.acquire().await?;
            self.inner.list_keys(range, keys).await
        })
    }

    fn existing_keys<'a>(&'a self, keys: &'a [String], candidates: &'a [String]) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let _permit = self.limit.acquire().await?;
            self.inner.existing_keys(keys, candidates).await
        })
    }
}

/// The stream owns the connection; the permit goes when the stream is dropped.
fn hold_while_streaming(stream: BatchStream, permit: OwnedSemaphorePermit) -> BatchStream {
    stream
        .map(move |item| {
            let _held = &permit;
            item
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_bound_holders() {
        let limit = ConnectionLimit::new(2);
        let a = limit.acquire().await.unwrap();
        let _b = limit.acquire().await.unwrap();
        assert_eq!(limit.permits.available_permits(), 0);
        drop(a);
        let _c = limit.acquire().await.unwrap();
        assert_eq!(limit.max(), 2);
        assert_eq!(ConnectionLimit::new(0).max(), 1);
    }
}
