//! The stage conformance suite: what the worker and every destination rely on from a
//! [`Stage`], checked against a real store (a local directory, S3, GCS).
//!
//! [`check_stage`] works under a fresh prefix of its own inside the stage and removes it at the
//! end. Checks, by name:
//!
//! - `put`: a small object reads back byte for byte, with its size;
//! - `multipart`: a multipart upload of several parts (two of 5 MiB, S3's smallest part, and a
//!   short last one) reads back whole, and is not visible before it completes;
//! - `abort`: an upload that fails midway (parts written, then aborted, or dropped without
//!   completing) leaves nothing visible: neither a listing nor a read finds the key;
//! - `list`: listing a prefix returns exactly the objects under it, and a delimited listing
//!   its sub-prefixes;
//! - `delete`: a deleted object can no longer be read or listed;
//! - `urls`: the stage URL and each file URL have the stage's scheme and name the object;
//! - `cleanup`: nothing the suite wrote is left.

use std::time::{SystemTime, UNIX_EPOCH};

use backhaul_core::stage::{Stage, StageKind};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

use crate::report::{Checker, Violations};

/// S3's smallest multipart part (all but the last); other stores accept it too.
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;

/// Checks `stage` against the stage contract; see the [module documentation](self).
pub async fn check_stage(stage: &Stage) -> Result<(), Violations> {
    let mut checker = Checker::new("stage");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let root = format!("stage-conformance-{}-{nanos}", std::process::id());
    let at = |rest: &str| Path::from(format!("{root}/{rest}"));

    check_put(stage, &at("put/small.bin"), &mut checker).await;
    check_multipart(stage, &at("multipart/big.parquet"), &mut checker).await;
    check_abort(
        stage,
        &at("aborted/part-0000.parquet"),
        &at("dropped/part-0000.parquet"),
        &mut checker,
    )
    .await;
    check_list_and_delete(stage, &root, &mut checker).await;
    check_urls(stage, &at("put/small.bin"), &mut checker);

    // Cleanup, and proof that it worked.
    let prefix = Path::from(root.as_str());
    if let Ok(objects) = list(stage, &prefix).await {
        for location in objects {
            let _ = stage.store().delete(&location).await;
        }
    }
    match list(stage, &prefix).await {
        Ok(left) => {
            checker.ensure(left.is_empty(), "cleanup", || {
                format!("objects left after deleting: {left:?}")
            });
        }
        Err(e) => checker.fail("cleanup", format!("listing {prefix}: {e}")),
    }
    checker.finish(())
}

async fn list(stage: &Stage, prefix: &Path) -> object_store::Result<Vec<Path>> {
    let mut found: Vec<Path> = stage
        .store()
        .list(Some(prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await?;
    found.sort();
    Ok(found)
}

/// Whether `path` is absent: reading it says "not found".
async fn is_absent(stage: &Stage, path: &Path) -> Result<bool, String> {
    match stage.store().head(path).await {
        Ok(_) => Ok(false),
        Err(object_store::Error::NotFound { .. }) => Ok(true),
        Err(e) => Err(format!("head {path}: {e}")),
    }
}

/// Deterministic bytes that differ from part to part, so a part written twice or out of
/// order is caught.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).wrapping_add(seed as u64) as u8)
        .collect()
}

async fn check_put(stage: &Stage, path: &Path, checker: &mut Checker) {
    let data = pattern(1000, 1);
    if let Err(e) = stage.store().put(path, PutPayload::from(data.clone())).await {
        checker.fail("put", format!("put {path}: {e}"));
        return;
    }
    match stage.store().get(path).await {
        Ok(got) => {
            let size = got.meta.size;
            match got.bytes().await {
                Ok(bytes) => {
                    checker.ensure(bytes.as_ref() == data.as_slice(), "put", || {
                        format!(
                            "{path} read back {} bytes unlike the {} written",
                            bytes.len(),
                            data.len()
                        )
                    });
                    checker.ensure(size == data.len() as u64, "put", || {
                        format!("{path} reports size {size}, {} were written", data.len())
                    });
                }
                Err(e) => checker.fail("put", format!("read {path}: {e}")),
            }
        }
        Err(e) => checker.fail("put", format!("get {path}: {e}")),
    }
}

async fn check_multipart(stage: &Stage, path: &Path, checker: &mut Checker) {
    let pieces = [pattern(MIN_PART_BYTES, 2), pattern(MIN_PART_BYTES, 3), pattern(1234, 4)];
    let upload = match stage.store().put_multipart(path).await {
        Ok(u) => u,
        Err(e) => {
            checker.fail("multipart", format!("start {path}: {e}"));
            return;
        }
    };
    let mut writer = WriteMultipart::new_with_chunk_size(upload, MIN_PART_BYTES);
    for piece in &pieces {
        writer.write(piece);
    }
    if let Err(e) = writer.wait_for_capacity(0).await {
        checker.fail("multipart", format!("upload parts of {path}: {e}"));
        let _ = writer.abort().await;
        return;
    }
    match is_absent(stage, path).await {
        Ok(absent) => {
            checker.ensure(absent, "multipart", || {
                format!("{path} is visible before its multipart upload completed")
            });
        }
        Err(e) => checker.fail("multipart", e),
    }
    if let Err(e) = writer.finish().await {
        checker.fail("multipart", format!("complete {path}: {e}"));
        return;
    }
    let expected: Vec<u8> = pieces.concat();
    match stage.store().get(path).await {
        Ok(got) => match got.bytes().await {
            Ok(bytes) => {
                checker.ensure(bytes.as_ref() == expected.as_slice(), "multipart", || {
                    format!(
                        "{path} read back {} bytes unlike the {} uploaded in {} parts",
                        bytes.len(),
                        expected.len(),
                        pieces.len()
                    )
                });
            }
            Err(e) => checker.fail("multipart", format!("read {path}: {e}")),
        },
        Err(e) => checker.fail("multipart", format!("get {path}: {e}")),
    }
}

async fn check_abort(stage: &Stage, aborted: &Path, dropped: &Path, checker: &mut Checker) {
    for (path, how) in [(aborted, "aborted"), (dropped, "dropped")] {
        let mut upload = match stage.store().put_multipart(path).await {
            Ok(u) => u,
            Err(e) => {
                checker.fail("abort", format!("start {path}: {e}"));
                continue;
            }
        };
        // Two full parts reach the store, then the upload fails.
        for seed in [5, 6] {
            if let Err(e) = upload.put_part(PutPayload::from(pattern(MIN_PART_BYTES, seed))).await {
                checker.fail("abort", format!("upload a part of {path}: {e}"));
            }
        }
        if how == "aborted" {
            if let Err(e) = upload.abort().await {
                checker.fail("abort", format!("abort {path}: {e}"));
            }
        } else {
            drop(upload);
        }
        let parent = Path::from_iter(path.parts().take(path.parts().count() - 1));
        match list(stage, &parent).await {
            Ok(found) => {
                checker.ensure(found.is_empty(), "abort", || {
                    format!("after an {how} upload of {path}, listing {parent} finds {found:?}")
                });
            }
            Err(e) => checker.fail("abort", format!("list {parent}: {e}")),
        }
        match is_absent(stage, path).await {
            Ok(absent) => {
                checker.ensure(absent, "abort", || format!("{path} is readable after an {how} upload"));
            }
            Err(e) => checker.fail("abort", e),
        }
    }
}

async fn check_list_and_delete(stage: &Stage, root: &str, checker: &mut Checker) {
    let names = ["list/x/1.bin", "list/x/2.bin", "list/y/3.bin", "listed-not/4.bin"];
    for name in names {
        let path = Path::from(format!("{root}/{name}"));
        if let Err(e) = stage.store().put(&path, PutPayload::from_static(b"x")).await {
            checker.fail("list", format!("put {path}: {e}"));
            return;
        }
    }
    let x = Path::from(format!("{root}/list/x"));
    let expected = vec![
        Path::from(format!("{root}/list/x/1.bin")),
        Path::from(format!("{root}/list/x/2.bin")),
    ];
    match list(stage, &x).await {
        Ok(found) => {
            checker.ensure(found == expected, "list", || {
                format!("listing {x} finds {found:?}, expected {expected:?}")
            });
        }
        Err(e) => checker.fail("list", format!("list {x}: {e}")),
    }
    let parent = Path::from(format!("{root}/list"));
    match stage.store().list_with_delimiter(Some(&parent)).await {
        Ok(result) => {
            let mut prefixes = result.common_prefixes;
            prefixes.sort();
            let want = vec![
                Path::from(format!("{root}/list/x")),
                Path::from(format!("{root}/list/y")),
            ];
            checker.ensure(prefixes == want && result.objects.is_empty(), "list", || {
                format!(
                    "delimited listing of {parent} finds prefixes {prefixes:?} and {} objects, expected {want:?} and none",
                    result.objects.len()
                )
            });
        }
        Err(e) => checker.fail("list", format!("delimited list {parent}: {e}")),
    }

    let gone = &expected[0];
    if let Err(e) = stage.store().delete(gone).await {
        checker.fail("delete", format!("delete {gone}: {e}"));
        return;
    }
    match is_absent(stage, gone).await {
        Ok(absent) => {
            checker.ensure(absent, "delete", || format!("{gone} is readable after delete"));
        }
        Err(e) => checker.fail("delete", e),
    }
    match list(stage, &x).await {
        Ok(found) => {
            checker.ensure(found == expected[1..], "delete", || {
                format!("after deleting {gone}, listing {x} finds {found:?}")
            });
        }
        Err(e) => checker.fail("delete", format!("list {x}: {e}")),
    }
}

fn check_urls(stage: &Stage, path: &Path, checker: &mut Checker) {
    let scheme = format!("{}://", stage.kind().scheme());
    let url = stage.url();
    checker.ensure(url.starts_with(&scheme) && !url.ends_with('/'), "urls", || {
        format!("stage URL {url} does not start with {scheme} or ends with `/`")
    });
    let file = stage.file_url(path);
    checker.ensure(file == format!("{url}/{path}"), "urls", || {
        format!("file URL of {path} is {file}, expected {url}/{path}")
    });
    if stage.kind() == StageKind::Local {
        let on_disk = std::path::Path::new(file.trim_start_matches("file://"));
        checker.ensure(on_disk.is_file(), "urls", || {
            format!("file URL {file} does not name the staged file")
        });
    }
}
