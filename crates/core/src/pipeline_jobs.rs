//! A pipeline's tables as jobs: the pipeline validated, the schemas it names discovered at the
//! source (one connection each, within the pipeline's connection limit), every table expanded
//! into its job (docs/pipelines.md). The CLI's pipeline commands and the coordinator's
//! scheduled runs of a pipeline both expand it here; each job is then checked and planned like
//! any job spec.

use std::path::Path;

use crate::error::Result;
use crate::limit::ConnectionLimit;
use crate::registry::Connectors;
use crate::spec::{PipelineJob, PipelineSpec};

/// Validates `spec` (pure), discovers its schemas through the source kind and expands its
/// tables into jobs, in spec order. `base` is the directory relative paths resolve against;
/// errors name `origin`, the table and the key, and nothing is written.
pub async fn expand_pipeline(
    spec: &PipelineSpec,
    connectors: &dyn Connectors,
    origin: &str,
    base: &Path,
    limit: &ConnectionLimit,
) -> Result<Vec<PipelineJob>> {
    spec.validate(origin)?;
    let source = connectors.source_kind_of(&spec.source, origin)?;
    let destination = connectors.destination_kind_of(&spec.destination, origin)?;
    let mut catalogs = Vec::new();
    for schema in spec.schemas() {
        let _permit = limit.acquire().await?;
        let catalog = source
            .discover(&spec.source.settings, origin, base, schema.as_deref())
            .await?;
        catalogs.push((schema, catalog));
    }
    spec.expand(origin, &catalogs, source, destination)
}
