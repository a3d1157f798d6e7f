//! Helpers shared by the PUT tests (included with `#[path]`; on its own it has no tests).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use aes::cipher::{BlockDecrypt, KeyInit};
use aes::{Aes128, Aes256};
use backhaul_snowflake_client::{PutFile, Result, StageAnswer, StageAnswers};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
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
