//! Generated code of Google's BigQuery Storage API (`proto/google`), one module per proto
//! package so the generated cross-package paths resolve.
#![allow(missing_docs, clippy::all, rustdoc::all)]

/// `google.*` packages.
pub mod google {
    /// `google.api`: annotations only (HTTP rules, field behaviour, resources).
    pub mod api {
        tonic::include_proto!("google.api");
    }
    /// `google.rpc`: the `Status` carried by in-stream append errors.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
    /// `google.cloud.bigquery.storage.v1`.
    pub mod cloud {
        pub mod bigquery {
            pub mod storage {
                pub mod v1 {
                    tonic::include_proto!("google.cloud.bigquery.storage.v1");
                }
            }
        }
    }
}
