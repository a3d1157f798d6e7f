//! Helpers shared by the PUT tests (each includes this module with `#[path]`).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aes::cipher::{BlockDecrypt, KeyInit};
use aes::{Aes128, Aes256};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use backhaul_snowflake_client::{PutFile, Result, StageAnswer, StageAnswers};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::future::BoxFuture;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

/// A 128-bit query stage master key (base64), as real stages send.
pub const MASTER_KEY_128: &str = "AAECAwQFBgcICQoLDA0ODw==";
/// A 256-bit one.
pub const MASTER_KEY_256: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// Deterministic bytes that do not compress (xorshift).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The files, put into an in-memory object store (the backhaul stage).
pub async fn source(files: &[(&str, &[u8])]) -> Vec<PutFile> {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut out = Vec::new();
    for (name, bytes) in files {
        let path = Path::from(format!("job/chunk-000001/{name}"));
        store.put(&path, bytes.to_vec().into()).await.unwrap();
        out.push(PutFile {
            name: name.to_string(),
            store: store.clone(),
            path,
            size: bytes.len() as u64,
        });
    }
    out
}

/// base64 SHA-256, the `sfc-digest`.
pub fn digest(bytes: &[u8]) -> String {
    STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

fn decrypt_block(key: &[u8], block: &mut [u8]) {
    let block = aes::Block::from_mut_slice(block);
    match key.len() {
        16 => Aes128::new_from_slice(key).unwrap().decrypt_block(block),
        32 => Aes256::new_from_slice(key).unwrap().decrypt_block(block),
        n => panic!("key of {n} bytes"),
    }
}

fn unpad(mut data: Vec<u8>) -> Vec<u8> {
    let pad = *data.last().expect("padded data is never empty") as usize;
    assert!((1..=16).contains(&pad), "bad padding {pad}");
    assert!(data[data.len() - pad..].iter().all(|b| *b as usize == pad));
    data.truncate(data.len() - pad);
    data
}

/// Decrypts a staged file with the documented scheme: unwrap the file key with the master key
/// (AES-ECB, PKCS#7), then AES-CBC with the IV (PKCS#7).
pub fn decrypt(master_key_b64: &str, wrapped_key_b64: &str, iv_b64: &str, encrypted: &[u8]) -> Vec<u8> {
    let master = STANDARD.decode(master_key_b64).unwrap();
    let mut key = STANDARD.decode(wrapped_key_b64).unwrap();
    for block in key.chunks_exact_mut(16) {
        decrypt_block(&master, block);
    }
    let key = unpad(key);
    assert_eq!(key.len(), master.len(), "file key as long as the master key");
    let mut chain: Vec<u8> = STANDARD.decode(iv_b64).unwrap();
    assert_eq!(encrypted.len() % 16, 0);
    let mut out = encrypted.to_vec();
    for block in out.chunks_exact_mut(16) {
        let ciphertext = block.to_vec();
        decrypt_block(&key, block);
        for (b, c) in block.iter_mut().zip(&chain) {
            *b ^= c;
        }
        chain = ciphertext;
    }
    unpad(out)
}

/// Answers PUT statements from a function of the file name, and records which were asked.
pub struct ScriptedAnswers<F> {
    pub answer: F,
    pub asked: Mutex<Vec<String>>,
}

impl<F> ScriptedAnswers<F>
where
    F: Fn(&str, usize) -> serde_json::Value + Send + Sync,
{
    pub fn new(answer: F) -> Self {
        ScriptedAnswers {
            answer,
            asked: Mutex::new(Vec::new()),
        }
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl<F> StageAnswers for ScriptedAnswers<F>
where
    F: Fn(&str, usize) -> serde_json::Value + Send + Sync,
{
    fn answer_for<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<StageAnswer>> {
        let count = {
            let mut asked = self.asked.lock().unwrap();
            asked.push(name.to_string());
            asked.iter().filter(|n| *n == name).count()
        };
        let data = (self.answer)(name, count);
        Box::pin(async move { StageAnswer::parse(&data) })
    }
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Default)]
pub struct Capture {
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Answers (status, body), in order; 200 with an ETag once they run out.
    script: Arc<Mutex<VecDeque<(u16, String)>>>,
}

impl Capture {
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
    /// Answers these statuses (with a short message) before the default success.
    pub fn script(&self, statuses: &[u16]) {
        let answers = statuses.iter().map(|s| (*s, format!("scripted failure {s}")));
        self.script.lock().unwrap().extend(answers);
    }

    /// Answers `status` with `body` once.
    pub fn script_body(&self, status: u16, body: &str) {
        self.script.lock().unwrap().push_back((status, body.to_string()));
    }
}

async fn record(
    State(capture): State<Capture>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    capture.requests.lock().unwrap().push(Recorded {
        method,
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers,
        body,
    });
    let (status, body) = capture
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((200, String::new()));
    // An ETag, as S3 answers a PUT with.
    (StatusCode::from_u16(status).unwrap(), [("etag", "\"0123abcd\"")], body)
}

/// The server; it stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub capture: Capture,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server on a port from the OS that records every request and answers from a script.
pub async fn start() -> Server {
    let capture = Capture::default();
    let app = Router::new()
        .fallback(record)
        .layer(DefaultBodyLimit::disable())
        .with_state(capture.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, capture, task }
}
