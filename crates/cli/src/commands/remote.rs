//! What every command that talks to a coordinator shares: where it is, the token, TLS, and how
//! job status looks on the wire and on screen.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use backhaul_coordinator::JobSummary;
use backhaul_core::cursor::CursorKind;
use backhaul_proto::v1 as pb;
use backhaul_proto::{Client, ClientConfig, ClientTls, Token};
use clap::Args;
use serde_json::{Value, json};

/// Environment variable holding the shared token itself (for containers; prefer a file).
pub const TOKEN_ENV: &str = "BACKHAUL_TOKEN";

/// The shared token: `--token-file`, else `$BACKHAUL_TOKEN`, else none.
#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// File holding the shared token (e.g. a mounted Secret). Without it, $BACKHAUL_TOKEN is
    /// used when set. The token is never printed.
    #[arg(long, env = "BACKHAUL_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// Reads the token.
    pub fn token(&self) -> Result<Option<Token>> {
        if let Some(path) = &self.token_file {
            return Ok(Some(Token::from_file(path)?));
        }
        match std::env::var(TOKEN_ENV) {
            Ok(text) => Ok(Some(
                Token::new(&text).with_context(|| format!("reading the token from ${TOKEN_ENV}"))?,
            )),
            Err(_) => Ok(None),
        }
    }
}

/// How a client reaches a coordinator.
#[derive(Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Coordinator URL: http://host:port, or https://host:port with TLS.
    #[arg(long, env = "BACKHAUL_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub token: TokenArgs,
    /// CA certificate (PEM) that signed the coordinator's certificate (and the workers' Flight
    /// certificates); needed for https://.
    #[arg(long, env = "BACKHAUL_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with the coordinator and workers' Flight ports.
    #[arg(long, env = "BACKHAUL_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "BACKHAUL_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Server name to expect in the coordinator's certificate, when not the URL's host.
    #[arg(long, value_name = "NAME")]
    pub tls_domain: Option<String>,
}

impl RemoteArgs {
    /// The coordinator URL, which this command needs.
    pub fn url(&self) -> Result<&str> {
        self.coordinator
            .as_deref()
            .ok_or_else(|| anyhow!("give the coordinator's URL with --coordinator URL (or $BACKHAUL_COORDINATOR)"))
    }

    /// The connection settings.
    pub fn config(&self) -> Result<ClientConfig> {
        let url = self.url()?;
        let tls =
            (url.starts_with("https://") || self.tls_ca.is_some() || self.tls_cert.is_some()).then(|| ClientTls {
                ca: self.tls_ca.clone(),
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                domain: self.tls_domain.clone(),
            });
        Ok(ClientConfig {
            token: self.token.token()?,
            tls,
            ..ClientConfig::plain(url)
        })
    }

    /// A client for one command.
    pub fn client(&self) -> Result<Client> {
        Ok(self.config()?.connect_lazy()?)
    }

    /// Turns a refused or failed call into an error that says who refused what.
    pub fn rpc_error(&self, call: &str, status: tonic::Status) -> anyhow::Error {
        let reason = match status.code() {
            tonic::Code::Unauthenticated => "the coordinator requires a valid token (--token-file or $BACKHAUL_TOKEN)",
            tonic::Code::Unavailable => "the coordinator cannot be reached",
            tonic::Code::NotFound => "not found",
            // A connection the other side closed during or right after the handshake: most
            // often TLS on one side only, or a client certificate the coordinator refused.
            tonic::Code::Cancelled | tonic::Code::Unknown => {
                "the coordinator closed the connection (http:// vs https://, --tls-ca, or a client certificate it does not trust?)"
            }
            _ => "the call failed",
        };
        let detail = backhaul_proto::status_detail(&status);
        anyhow!(
            "{call} at {}: {reason} ({:?}: {detail})",
            self.coordinator.as_deref().unwrap_or("?"),
            status.code(),
        )
    }
}

/// The cursor kind named on the wire.
pub fn cursor_kind(name: &str) -> CursorKind {
    CursorKind::from_name(name).unwrap_or(CursorKind::Timestamp)
}

/// The job state's name for people and JSON.
pub fn state_name(state: i32) -> &'static str {
    pb::JobState::label_of(state)
}

/// A chunk state's name.
pub fn chunk_state_name(state: i32) -> &'static str {
    match pb::ChunkState::try_from(state) {
        Ok(pb::ChunkState::Pending) => "pending",
        Ok(pb::ChunkState::Leased) => "leased",
        Ok(pb::ChunkState::Committed) => "committed",
        Ok(pb::ChunkState::Parked) => "parked",
        Ok(pb::ChunkState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// An error class's name.
pub fn class_name(class: i32) -> &'static str {
    backhaul_proto::error_class(class).map_or("unknown", |c| c.as_str())
}

/// The wire status as the summary the progress bar and local commands use.
pub fn summary(s: &pb::JobStatus) -> JobSummary {
    JobSummary::from(s)
}

/// A job's status as JSON: the shape of the local `status --output json`, plus `state`.
pub fn status_json(s: &pb::JobStatus) -> Value {
    let kind = cursor_kind(&s.cursor_kind);
    let range = s.range.unwrap_or_default();
    json!({
        "job": s.job_id,
        "state": state_name(s.state),
        "range": { "from": kind.format(range.from), "to": kind.format(range.to) },
        "finished": summary(s).is_finished(),
        "summary": summary(s),
        "breaker": s.breaker.as_ref().map(breaker_json),
    })
}

/// A source's circuit breaker as JSON (times in RFC 3339, UTC).
pub fn breaker_json(b: &pb::SourceBreaker) -> Value {
    let at = |us: i64| chrono::DateTime::from_timestamp_micros(us).map(|t| t.to_rfc3339());
    json!({
        "state": b.state,
        "consecutive_failures": b.consecutive_failures,
        "open_until": (b.open_until_ms != 0).then(|| at(b.open_until_ms.saturating_mul(1_000))).flatten(),
        "reported_at": (b.reported_at_us != 0).then(|| at(b.reported_at_us)).flatten(),
    })
}

/// A source's circuit breaker for people, e.g. `open until 2026-01-05 10:00:00 UTC`.
pub fn breaker_text(b: &pb::SourceBreaker) -> String {
    b.report().map_or_else(|| b.state.clone(), |r| r.describe())
}

/// A chunk's status as JSON.
pub fn chunk_json(kind: CursorKind, c: &pb::ChunkStatus) -> Value {
    let range = c.range.unwrap_or_default();
    json!({
        "index": c.chunk_id,
        "from": kind.format(range.from),
        "to": kind.format(range.to),
        "state": chunk_state_name(c.state),
        "attempt": c.attempt,
        "failures": c.failures,
        "estimated_rows": c.estimated_rows,
        "rows": c.rows,
        "bytes": c.bytes,
        "worker": (!c.worker_id.is_empty()).then_some(&c.worker_id),
        "proof": backhaul_proto::proof::proof_level(c.proof_level),
        "proves": backhaul_proto::proof::proof_level(c.proof_level).map(|l| l.proves()),
        "dead_letters": c.dead_letters,
        "split_from": c.split_from,
        "last_error": c.last_error.as_ref().map(|e| json!({
            "class": class_name(e.class), "kind": e.kind, "message": e.message,
        })),
    })
}

/// A refused spec as JSON, every part in its own key.
pub fn job_error_json(e: &pb::JobError) -> Value {
    json!({
        "class": class_name(e.class),
        "kind": e.kind,
        "file": (!e.file.is_empty()).then_some(&e.file),
        "field": (!e.field.is_empty()).then_some(&e.field),
        "object": (!e.object.is_empty()).then_some(&e.object),
        "message": e.message,
    })
}

/// A refused spec for people: `file: field: message`, like a local validation error.
pub fn job_error_text(e: &pb::JobError) -> String {
    let mut out = String::new();
    if !e.file.is_empty() {
        out.push_str(&e.file);
        out.push_str(": ");
    }
    if !e.field.is_empty() {
        out.push_str(&e.field);
        out.push_str(": ");
    }
    if !e.object.is_empty() {
        out.push_str(&e.object);
        out.push_str(": ");
    }
    out.push_str(&e.message);
    out
}

/// Exit code of a finished job: 0 succeeded, 4 parked, 1 cancelled.
pub fn exit_code(s: &pb::JobStatus) -> u8 {
    match pb::JobState::try_from(s.state) {
        Ok(pb::JobState::Parked) => crate::exit::PARKED,
        Ok(pb::JobState::Cancelled) => crate::exit::FAILURE,
        _ => 0,
    }
}

/// Polls the job and draws progress until it is finished; returns its last status.
pub async fn follow(remote: &RemoteArgs, client: &mut Client, job_id: &str, progress: bool) -> Result<pb::JobStatus> {
    let fetch = |client: &mut Client| {
        let req = pb::GetJobStatusRequest {
            job_id: job_id.into(),
            include_chunks: false,
        };
        let mut c = client.clone();
        async move { c.get_job_status(req).await }
    };
    let first = fetch(client)
        .await
        .map_err(|s| remote.rpc_error("job status", s))?
        .into_inner()
        .status
        .ok_or_else(|| anyhow!("job status without a status"))?;
    let before = summary(&first);
    let bar = crate::output::RunProgress::new(progress, job_id, &before);
    let started = std::time::Instant::now();
    let mut last = first;
    let mut misses = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let log_every = Duration::from_secs(if progress { 0 } else { 5 });
    let mut last_log = std::time::Instant::now();
    loop {
        let now = summary(&last);
        if last_log.elapsed() >= log_every {
            bar.update(&now, &before, started.elapsed());
            last_log = std::time::Instant::now();
        }
        if now.is_finished() {
            bar.finish(&now, &before, started.elapsed());
            return Ok(last);
        }
        tick.tick().await;
        match fetch(client).await {
            Ok(r) => {
                misses = 0;
                if let Some(s) = r.into_inner().status {
                    last = s;
                }
            }
            // The coordinator may be restarting: keep watching for a while.
            Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) && misses < 240 => {
                misses += 1;
                tracing::debug!(error = %s.message(), "status poll failed; retrying");
            }
            Err(s) => return Err(remote.rpc_error("job status", s)),
        }
    }
}
