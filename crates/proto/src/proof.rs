//! The one conversion between proofs and their wire form (`ChunkProof`, `ProofLevel` and the
//! fingerprint JSON of `ChunkOutput`).

use backhaul_core::fingerprint::ChunkFingerprint;
use backhaul_core::proof::{ChunkProof, ProofLevel};

use crate::v1 as pb;

impl From<ProofLevel> for pb::ProofLevel {
    fn from(level: ProofLevel) -> Self {
        match level {
            ProofLevel::ExactChecksum => pb::ProofLevel::ExactChecksum,
            ProofLevel::Fingerprint => pb::ProofLevel::Fingerprint,
            ProofLevel::CountOnly => pb::ProofLevel::CountOnly,
        }
    }
}

/// The level of a wire `ProofLevel` value; `None` when unspecified or unknown.
pub fn proof_level(value: i32) -> Option<ProofLevel> {
    match pb::ProofLevel::try_from(value).ok()? {
        pb::ProofLevel::Unspecified => None,
        pb::ProofLevel::ExactChecksum => Some(ProofLevel::ExactChecksum),
        pb::ProofLevel::Fingerprint => Some(ProofLevel::Fingerprint),
        pb::ProofLevel::CountOnly => Some(ProofLevel::CountOnly),
    }
}

/// A fingerprint as the wire carries it (JSON).
pub fn fingerprint_json(fingerprint: &ChunkFingerprint) -> String {
    serde_json::to_string(fingerprint).expect("a fingerprint always serializes")
}

/// A fingerprint from the wire; `Ok(None)` when the field is empty (an older peer).
pub fn parse_fingerprint(json: &str) -> Result<Option<ChunkFingerprint>, String> {
    if json.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(json)
        .map(Some)
        .map_err(|e| format!("bad fingerprint JSON: {e}"))
}

impl From<&ChunkProof> for pb::ChunkProof {
    fn from(proof: &ChunkProof) -> Self {
        pb::ChunkProof {
            level: pb::ProofLevel::from(proof.level) as i32,
            rows: proof.rows,
            checksum: proof.checksum,
            fingerprint_json: proof.fingerprint.as_ref().map(fingerprint_json).unwrap_or_default(),
        }
    }
}

impl TryFrom<&pb::ChunkProof> for ChunkProof {
    type Error = String;

    fn try_from(proof: &pb::ChunkProof) -> Result<Self, String> {
        Ok(ChunkProof {
            level: proof_level(proof.level).ok_or_else(|| format!("unknown proof level {}", proof.level))?,
            rows: proof.rows,
            checksum: proof.checksum,
            fingerprint: parse_fingerprint(&proof.fingerprint_json)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_round_trip() {
        for level in [
            ProofLevel::ExactChecksum,
            ProofLevel::Fingerprint,
            ProofLevel::CountOnly,
        ] {
            let proof = ChunkProof {
                level,
                rows: 5,
                checksum: (level == ProofLevel::ExactChecksum).then_some(9),
                fingerprint: (level != ProofLevel::CountOnly).then(|| ChunkFingerprint {
                    rows: 5,
                    columns: vec![],
                }),
            };
            let wire = pb::ChunkProof::from(&proof);
            assert_eq!(ChunkProof::try_from(&wire).unwrap(), proof);
        }
        assert_eq!(proof_level(0), None);
    }
}
