//! Reading a source file from its object store in parts of bounded size, encrypting each part
//! off the IO runtime when the stage asks for it, and the `sfc-digest` of the plaintext.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::ObjectStoreExt;

use super::PutFile;
use super::crypto::{BLOCK, ContentEncryptor};
use super::failure::{UploadError, source_error};

/// Reads plaintext in pieces of at least this size before hashing one on a blocking thread.
const HASH_BATCH: usize = 4 << 20;

/// The file's plaintext in parts of `part_size` bytes (the last one shorter), encrypted when an
/// encryptor is given; the encryption padding goes with the last part.
pub(crate) struct PartReader {
    file: String,
    expected_size: u64,
    read: u64,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    buf: BytesMut,
    part_size: usize,
    encryptor: Option<ContentEncryptor>,
    emitted: bool,
    done: bool,
}

impl PartReader {
    /// Opens `file`; `part_size` must be a multiple of the AES block.
    pub(crate) async fn open(
        file: &PutFile,
        part_size: usize,
        encryptor: Option<ContentEncryptor>,
    ) -> Result<PartReader, UploadError> {
        debug_assert_eq!(part_size % BLOCK, 0);
        let stream = file
            .store
            .get(&file.path)
            .await
            .map_err(|e| source_error(&file.name, e))?
            .into_stream();
        Ok(PartReader {
            file: file.name.clone(),
            expected_size: file.size,
            read: 0,
            stream,
            buf: BytesMut::new(),
            part_size,
            encryptor,
            emitted: false,
            done: false,
        })
    }

    /// The next part, or `None` after the last.
    pub(crate) async fn next_part(&mut self) -> Result<Option<Bytes>, UploadError> {
        if self.done {
            return Ok(None);
        }
        // Read one byte past the part so the last part (which carries the padding) is known.
        let mut eof = false;
        while self.buf.len() <= self.part_size {
            match self.stream.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(|e| source_error(&self.file, e))?;
                    self.read += chunk.len() as u64;
                    self.buf.extend_from_slice(&chunk);
                }
                None => {
                    eof = true;
                    break;
                }
            }
        }
        if !eof {
            let mut part = self.buf.split_to(self.part_size);
            if let Some(mut encryptor) = self.encryptor.take() {
                let (enc, done) = tokio::task::spawn_blocking(move || {
                    encryptor.update(&mut part);
                    (encryptor, part)
                })
                .await
                .expect("encryption does not panic");
                self.encryptor = Some(enc);
                part = done;
            }
            self.emitted = true;
            return Ok(Some(part.freeze()));
        }
        self.done = true;
        if self.read != self.expected_size {
            return Err(UploadError::permanent(
                &self.file,
                format!(
                    "source is {} bytes, expected {} (changed while uploading?)",
                    self.read, self.expected_size
                ),
            ));
        }
        let rest = self.buf.split().freeze();
        match self.encryptor.take() {
            Some(encryptor) => {
                let last = tokio::task::spawn_blocking(move || encryptor.finish(&rest))
                    .await
                    .expect("encryption does not panic");
                Ok(Some(Bytes::from(last)))
            }
            None if rest.is_empty() && self.emitted => Ok(None),
            None => Ok(Some(rest)),
        }
    }
}

/// `sfc-digest`: base64 SHA-256 of the file's plaintext, hashed off the IO runtime.
pub(crate) async fn plaintext_digest(file: &PutFile) -> Result<String, UploadError> {
    let mut stream = file
        .store
        .get(&file.path)
        .await
        .map_err(|e| source_error(&file.name, e))?
        .into_stream();
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut batch = BytesMut::new();
    let mut total = 0u64;
    loop {
        let next = stream.next().await;
        let at_end = next.is_none();
        if let Some(chunk) = next {
            let chunk = chunk.map_err(|e| source_error(&file.name, e))?;
            total += chunk.len() as u64;
            batch.extend_from_slice(&chunk);
        }
        if batch.len() >= HASH_BATCH || (at_end && !batch.is_empty()) {
            let piece = batch.split().freeze();
            context = tokio::task::spawn_blocking(move || {
                context.update(&piece);
                context
            })
            .await
            .expect("hashing does not panic");
        }
        if at_end {
            break;
        }
    }
    if total != file.size {
        return Err(UploadError::permanent(
            &file.name,
            format!("source is {total} bytes, expected {}", file.size),
        ));
    }
    Ok(STANDARD.encode(context.finish()))
}

/// A whole small file, read once: its digest and its (possibly encrypted) body.
pub(crate) async fn read_whole(
    file: &PutFile,
    encryptor: Option<ContentEncryptor>,
) -> Result<(String, Bytes), UploadError> {
    let plain = file
        .store
        .get(&file.path)
        .await
        .map_err(|e| source_error(&file.name, e))?
        .bytes()
        .await
        .map_err(|e| source_error(&file.name, e))?;
    if plain.len() as u64 != file.size {
        return Err(UploadError::permanent(
            &file.name,
            format!("source is {} bytes, expected {}", plain.len(), file.size),
        ));
    }
    let (digest, body) = tokio::task::spawn_blocking(move || {
        let digest = STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, &plain));
        let body = match encryptor {
            Some(encryptor) => Bytes::from(encryptor.finish(&plain)),
            None => plain,
        };
        (digest, body)
    })
    .await
    .expect("hashing does not panic");
    Ok((digest, body))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::*;
    use crate::put::answer::EncryptionMaterial;
    use crate::session::Secret;

    async fn file(len: usize) -> PutFile {
        let store = Arc::new(InMemory::new());
        let path = Path::from("f");
        let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
        store.put(&path, bytes.into()).await.unwrap();
        PutFile {
            name: "f".into(),
            store,
            path,
            size: len as u64,
        }
    }

    async fn part_lengths(file: &PutFile, part: usize, encrypt: bool) -> Vec<usize> {
        let encryptor = encrypt.then(|| {
            let material = EncryptionMaterial {
                query_stage_master_key: Secret::new(STANDARD.encode([9u8; 16])),
                query_id: "q".into(),
                smk_id: "1".into(),
            };
            ContentEncryptor::new(&material).unwrap().0
        });
        let mut reader = PartReader::open(file, part, encryptor).await.unwrap();
        let mut lengths = Vec::new();
        while let Some(p) = reader.next_part().await.unwrap() {
            lengths.push(p.len());
        }
        lengths
    }

    #[tokio::test]
    async fn parts_cut_at_the_part_size_with_padding_on_the_last() {
        assert_eq!(part_lengths(&file(100).await, 32, false).await, [32, 32, 32, 4]);
        assert_eq!(part_lengths(&file(96).await, 32, false).await, [32, 32, 32]);
        assert_eq!(part_lengths(&file(0).await, 32, false).await, [0]);
        // The padding joins the last part, even a whole block of it.
        assert_eq!(part_lengths(&file(100).await, 32, true).await, [32, 32, 32, 16]);
        assert_eq!(part_lengths(&file(96).await, 32, true).await, [32, 32, 48]);
        assert_eq!(part_lengths(&file(0).await, 32, true).await, [16]);
    }

    #[tokio::test]
    async fn a_source_of_another_size_is_a_permanent_failure() {
        let mut f = file(50).await;
        f.size = 60;
        let mut reader = PartReader::open(&f, 32, None).await.unwrap();
        assert!(reader.next_part().await.unwrap().is_some());
        let e = reader.next_part().await.unwrap_err();
        assert_eq!(e.error.class(), backhaul_core::ErrorClass::Permanent);
        assert!(plaintext_digest(&f).await.is_err());
        assert!(read_whole(&f, None).await.is_err());
        f.size = 50;
        assert_eq!(
            plaintext_digest(&f).await.unwrap(),
            read_whole(&f, None).await.unwrap().0
        );
    }
}
