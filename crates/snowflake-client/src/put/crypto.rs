//! Snowflake's client-side encryption of staged files (the scheme of the official connectors'
//! `encryption_util`):
//!
//! - per file, a random content key as long as the query stage master key (16 or 32 bytes)
//!   and a random 16-byte IV;
//! - the content encrypted with AES-CBC under that key, PKCS#7 padded (a whole padding block
//!   when the length is a multiple of 16);
//! - the content key, PKCS#7 padded, encrypted with AES-ECB under the master key;
//! - the metadata stored beside the object: the wrapped key and the IV (base64), and the
//!   material descriptor `{"queryId":…,"smkId":…,"keySize":…}` (compact JSON, key size in bits).
//!
//! CBC is chained by hand over the `aes` block cipher so the content can be encrypted part by
//! part with bounded memory.

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::{Aes128, Aes256};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};

use super::answer::EncryptionMaterial;
use crate::error::{Error, Result};

/// AES block size in bytes.
pub const BLOCK: usize = 16;

/// The stored metadata of one encrypted file.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionMetadata {
    /// The content key wrapped with the master key, base64.
    pub wrapped_key: String,
    /// The IV, base64.
    pub iv: String,
    /// The material descriptor JSON.
    pub matdesc: String,
}

impl EncryptionMetadata {
    /// The `encryptiondata` JSON that GCS and Azure stages keep beside the object (S3 keeps the
    /// same facts in separate headers). `agent_algorithm` is what the agent block names: the
    /// official connectors write `AES_CBC_256` for GCS and `AES_CBC_128` for Azure.
    pub fn encryption_data(&self, agent_algorithm: &str) -> String {
        serde_json::json!({
            "EncryptionMode": "FullBlob",
            "WrappedContentKey": {"KeyId": "symmKey1", "EncryptedKey": self.wrapped_key, "Algorithm": "AES_CBC_256"},
            "EncryptionAgent": {"Protocol": "1.0", "EncryptionAlgorithm": agent_algorithm},
            "ContentEncryptionIV": self.iv,
            "KeyWrappingMetadata": {"EncryptionLibrary": "Java 5.3.0"},
        })
        .to_string()
    }
}

impl std::fmt::Debug for EncryptionMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionMetadata")
            .field("matdesc", &self.matdesc)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum AnyAes {
    Aes128(Box<Aes128>),
    Aes256(Box<Aes256>),
}

impl AnyAes {
    fn new(key: &[u8]) -> Result<AnyAes> {
        match key.len() {
            16 => Ok(AnyAes::Aes128(Box::new(
                Aes128::new_from_slice(key).expect("16-byte key"),
            ))),
            32 => Ok(AnyAes::Aes256(Box::new(
                Aes256::new_from_slice(key).expect("32-byte key"),
            ))),
            n => Err(Error::Protocol(format!(
                "stage master key is {n} bytes, expected 16 or 32"
            ))),
        }
    }

    fn encrypt_block(&self, block: &mut [u8; BLOCK]) {
        let array = aes::Block::from_mut_slice(block);
        match self {
            AnyAes::Aes128(c) => c.encrypt_block(array),
            AnyAes::Aes256(c) => c.encrypt_block(array),
        }
    }
}

/// AES-CBC encryption of one file's content, fed in pieces whose lengths are multiples of
/// [`BLOCK`] except the last one, which goes to [`ContentEncryptor::finish`].
#[derive(Clone)]
pub struct ContentEncryptor {
    cipher: AnyAes,
    chain: [u8; BLOCK],
}

impl ContentEncryptor {
    /// A fresh random content key and IV for one file, and the metadata naming them.
    pub fn new(material: &EncryptionMaterial) -> Result<(ContentEncryptor, EncryptionMetadata)> {
        let master = STANDARD
            .decode(material.query_stage_master_key.expose())
            .map_err(|e| Error::Protocol(format!("stage master key is not base64: {e}")))?;
        let master_cipher = AnyAes::new(&master)?;
        let rng = SystemRandom::new();
        let mut content_key = vec![0u8; master.len()];
        let mut iv = [0u8; BLOCK];
        rng.fill(&mut content_key)
            .and_then(|_| rng.fill(&mut iv))
            .map_err(|_| Error::Protocol("no system randomness for the file key".into()))?;

        let mut wrapped = pkcs7_pad(&content_key);
        for block in wrapped.chunks_exact_mut(BLOCK) {
            master_cipher.encrypt_block(block.try_into().expect("one block"));
        }
        // Key order as the official connectors write it.
        let json_str = |s: &str| serde_json::Value::from(s).to_string();
        let matdesc = format!(
            r#"{{"queryId":{},"smkId":{},"keySize":"{}"}}"#,
            json_str(&material.query_id),
            json_str(&material.smk_id),
            master.len() * 8
        );
        let metadata = EncryptionMetadata {
            wrapped_key: STANDARD.encode(&wrapped),
            iv: STANDARD.encode(iv),
            matdesc,
        };
        let encryptor = ContentEncryptor {
            cipher: AnyAes::new(&content_key)?,
            chain: iv,
        };
        Ok((encryptor, metadata))
    }

    /// Encrypts `data` in place; its length must be a multiple of [`BLOCK`].
    pub fn update(&mut self, data: &mut [u8]) {
        assert_eq!(data.len() % BLOCK, 0, "CBC update needs whole blocks");
        for block in data.chunks_exact_mut(BLOCK) {
            let block: &mut [u8; BLOCK] = block.try_into().expect("one block");
            for (b, c) in block.iter_mut().zip(self.chain) {
                *b ^= c;
            }
            self.cipher.encrypt_block(block);
            self.chain = *block;
        }
    }

    /// Pads and encrypts the last piece (any length, possibly empty).
    pub fn finish(mut self, last: &[u8]) -> Vec<u8> {
        let mut padded = pkcs7_pad(last);
        self.update(&mut padded);
        padded
    }
}

/// The encrypted length of `plain_len` bytes.
pub fn encrypted_len(plain_len: u64) -> u64 {
    (plain_len / BLOCK as u64 + 1) * BLOCK as u64
}

fn pkcs7_pad(data: &[u8]) -> Vec<u8> {
    let pad = BLOCK - data.len() % BLOCK;
    let mut out = Vec::with_capacity(data.len() + pad);
    out.extend_from_slice(data);
    out.resize(data.len() + pad, pad as u8);
    out
}

#[cfg(test)]
mod tests {
    use aes::cipher::BlockDecrypt;

    use super::*;
    use crate::session::Secret;

    fn material(key_len: usize) -> EncryptionMaterial {
        EncryptionMaterial {
            query_stage_master_key: Secret::new(STANDARD.encode((0..key_len as u8).collect::<Vec<_>>())),
            query_id: "01b2-put".into(),
            smk_id: "42".into(),
        }
    }

    fn decrypt(master: &[u8], meta: &EncryptionMetadata, data: &[u8]) -> Vec<u8> {
        fn dec(key: &[u8], block: &mut [u8; 16]) {
            let b = aes::Block::from_mut_slice(block);
            match key.len() {
                16 => Aes128::new_from_slice(key).unwrap().decrypt_block(b),
                _ => Aes256::new_from_slice(key).unwrap().decrypt_block(b),
            }
        }
        let mut key = STANDARD.decode(&meta.wrapped_key).unwrap();
        for b in key.chunks_exact_mut(16) {
            dec(master, b.try_into().unwrap());
        }
        key.truncate(key.len() - *key.last().unwrap() as usize);
        let mut chain: [u8; 16] = STANDARD.decode(&meta.iv).unwrap().try_into().unwrap();
        let mut out = data.to_vec();
        for b in out.chunks_exact_mut(16) {
            let block: &mut [u8; 16] = b.try_into().unwrap();
            let cipher_block = *block;
            dec(&key, block);
            for (x, c) in block.iter_mut().zip(chain) {
                *x ^= c;
            }
            chain = cipher_block;
        }
        out.truncate(out.len() - *out.last().unwrap() as usize);
        out
    }

    #[test]
    fn round_trips_in_pieces_for_both_key_sizes() {
        for key_len in [16, 32] {
            for plain_len in [0usize, 1, 15, 16, 17, 64, 1000] {
                let plain: Vec<u8> = (0..plain_len).map(|i| (i * 7) as u8).collect();
                let (mut enc, meta) = ContentEncryptor::new(&material(key_len)).unwrap();
                let whole = plain.len() / 32 * 32;
                let mut out = plain[..whole].to_vec();
                enc.update(&mut out[..whole / 2]);
                enc.update(&mut out[whole / 2..]);
                out.extend(enc.finish(&plain[whole..]));
                assert_eq!(out.len() as u64, encrypted_len(plain_len as u64));
                let master: Vec<u8> = (0..key_len as u8).collect();
                assert_eq!(decrypt(&master, &meta, &out), plain, "key {key_len} len {plain_len}");
                assert_eq!(
                    meta.matdesc,
                    format!(r#"{{"queryId":"01b2-put","smkId":"42","keySize":"{}"}}"#, key_len * 8)
                );
            }
        }
    }

    #[test]
    fn rejects_a_master_key_of_odd_length() {
        let mut m = material(16);
        m.query_stage_master_key = Secret::new(STANDARD.encode([1u8; 20]));
        assert!(matches!(ContentEncryptor::new(&m), Err(Error::Protocol(_))));
    }
}
