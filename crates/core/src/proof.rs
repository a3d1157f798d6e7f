//! What the writer measured of a chunk ([`ChunkEvidence`]), what a destination measured of it
//! once committed ([`ChunkProof`]), and the one comparison of the two ([`ChunkProof::check`]).
//!
//! A destination declares the [`ProofLevel`] it can give: an exact row checksum (file-based
//! destinations), the portable [fingerprint](crate::fingerprint) (SQL warehouses) or the row
//! count alone. Every place that accepts or re-checks a chunk (worker, coordinator, `verify`,
//! conformance suite) calls [`ChunkProof::check`], which compares exactly what the level proves.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::checksum::RowSummary;
use crate::error::Error;
use crate::fingerprint::{ChunkFingerprint, Difference};

/// What a destination can prove about a committed chunk, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofLevel {
    /// Rows and the order-independent row checksum: any changed, missing or extra row shows.
    ExactChecksum,
    /// Rows and the portable fingerprint: per-column NULL counts and exact aggregates.
    Fingerprint,
    /// The row count only.
    CountOnly,
}

impl ProofLevel {
    /// Stable name: `exact_checksum`, `fingerprint` or `count_only`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProofLevel::ExactChecksum => "exact_checksum",
            ProofLevel::Fingerprint => "fingerprint",
            ProofLevel::CountOnly => "count_only",
        }
    }

    /// Parses [`ProofLevel::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exact_checksum" => Some(ProofLevel::ExactChecksum),
            "fingerprint" => Some(ProofLevel::Fingerprint),
            "count_only" => Some(ProofLevel::CountOnly),
            _ => None,
        }
    }

    /// Short name for tables: `exact checksum`, `fingerprint`, `rows only`.
    pub fn label(self) -> &'static str {
        match self {
            ProofLevel::ExactChecksum => "exact checksum",
            ProofLevel::Fingerprint => "fingerprint",
            ProofLevel::CountOnly => "rows only",
        }
    }

    /// What a passing check of this level establishes, for people: `rows and row checksum`,
    /// `rows and column fingerprint`, `rows only`.
    pub fn proves(self) -> &'static str {
        match self {
            ProofLevel::ExactChecksum => "rows and row checksum",
            ProofLevel::Fingerprint => "rows and column fingerprint",
            ProofLevel::CountOnly => "rows only",
        }
    }
}

impl fmt::Display for ProofLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the writer measured of a chunk's rows while encoding them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkEvidence {
    /// Rows and exact row checksum.
    pub summary: RowSummary,
    /// The portable fingerprint.
    pub fingerprint: ChunkFingerprint,
}

impl ChunkEvidence {
    /// Adds the evidence of other rows of the same schema.
    pub fn merge(&mut self, other: &ChunkEvidence) -> crate::Result<()> {
        self.summary.merge(other.summary);
        self.fingerprint.merge(&other.fingerprint)
    }
}

/// What a destination measured from a chunk's committed data, at its [`ProofLevel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkProof {
    /// The level this proof is checked at.
    pub level: ProofLevel,
    /// Committed rows.
    pub rows: u64,
    /// The row checksum; required at [`ProofLevel::ExactChecksum`].
    pub checksum: Option<u64>,
    /// The fingerprint; required at [`ProofLevel::Fingerprint`].
    pub fingerprint: Option<ChunkFingerprint>,
}

/// Every way a proof differs from the evidence, at the proof's level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofMismatch {
    /// The level that was checked.
    pub level: ProofLevel,
    /// The differences, rows first.
    pub differences: Vec<Difference>,
}

impl fmt::Display for ProofMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} proof differs: ", self.level)?;
        for (i, d) in self.differences.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl ProofMismatch {
    /// [`Error::VerificationFailed`] for `what` (e.g. `chunk 7 of job orders`), naming every
    /// differing column with both values.
    pub fn into_error(self, what: impl Into<String>) -> Error {
        Error::VerificationFailed {
            what: what.into(),
            message: format!("extracted vs committed: {self}"),
        }
    }
}

impl ChunkProof {
    /// The proof a destination gives at `level` for data measured as `evidence` (for
    /// destinations that measure the same things the writer does, like the local warehouse).
    pub fn from_evidence(level: ProofLevel, evidence: &ChunkEvidence) -> Self {
        ChunkProof {
            level,
            rows: evidence.summary.rows,
            checksum: Some(evidence.summary.checksum),
            fingerprint: Some(evidence.fingerprint.clone()),
        }
    }

    /// Compares this proof with what the writer measured, exactly as far as the level proves:
    /// rows always; the checksum at `exact_checksum`; every column measure at `fingerprint`.
    /// A proof missing what its level requires is a difference too.
    pub fn check(&self, expected: &ChunkEvidence) -> Result<(), ProofMismatch> {
        let mut differences = Vec::new();
        if self.rows != expected.summary.rows {
            differences.push(Difference::new(None, "rows", expected.summary.rows, self.rows));
        }
        match self.level {
            ProofLevel::ExactChecksum => match self.checksum {
                Some(c) if c == expected.summary.checksum => {}
                Some(c) => differences.push(Difference::new(
                    None,
                    "checksum",
                    format!("{:016x}", expected.summary.checksum),
                    format!("{c:016x}"),
                )),
                None => differences.push(Difference::new(
                    None,
                    "checksum",
                    format!("{:016x}", expected.summary.checksum),
                    "none (the proof carries no checksum)",
                )),
            },
            ProofLevel::Fingerprint => match &self.fingerprint {
                Some(found) => differences.extend(
                    expected
                        .fingerprint
                        .differences(found)
                        .into_iter()
                        // Rows were compared above, from the proof itself.
                        .filter(|d| d.column.is_some()),
                ),
                None => differences.push(Difference::new(
                    None,
                    "fingerprint",
                    "a fingerprint",
                    "none (the proof carries no fingerprint)",
                )),
            },
            ProofLevel::CountOnly => {}
        }
        // An exact proof that fails and also carries a fingerprint says which columns differ:
        // detail only, the checksum decided.
        if self.level == ProofLevel::ExactChecksum
            && !differences.is_empty()
            && !expected.fingerprint.columns.is_empty()
            && let Some(found) = &self.fingerprint
        {
            differences.extend(
                expected
                    .fingerprint
                    .differences(found)
                    .into_iter()
                    .filter(|d| d.column.is_some()),
            );
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(ProofMismatch {
                level: self.level,
                differences,
            })
        }
    }

    /// [`ChunkProof::check`] as a crate error naming `what` (e.g. `chunk 7 of job orders`).
    pub fn verify(&self, expected: &ChunkEvidence, what: impl Into<String>) -> crate::Result<()> {
        self.check(expected).map_err(|m| m.into_error(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::{ColumnFingerprint, ColumnMeasure};

    fn evidence() -> ChunkEvidence {
        ChunkEvidence {
            summary: RowSummary { rows: 3, checksum: 7 },
            fingerprint: ChunkFingerprint {
                rows: 3,
                columns: vec![ColumnFingerprint {
                    name: "name".into(),
                    nulls: 0,
                    measure: ColumnMeasure::ByteLength { bytes: 9 },
                }],
            },
        }
    }

    #[test]
    fn each_level_checks_what_it_proves() {
        let e = evidence();
        let mut changed = e.clone();
        changed.summary.checksum = 8;
        changed.fingerprint.columns[0].measure = ColumnMeasure::ByteLength { bytes: 10 };

        let exact = ChunkProof::from_evidence(ProofLevel::ExactChecksum, &changed);
        let m = exact.check(&e).unwrap_err();
        // The checksum decides; the fingerprint it carries names the column.
        assert_eq!(m.differences.len(), 2);
        assert_eq!(m.differences[0].measure, "checksum");
        assert_eq!(m.differences[1].column.as_deref(), Some("name"));
        let same_columns = ChunkProof {
            fingerprint: Some(e.fingerprint.clone()),
            ..exact.clone()
        };
        assert_eq!(same_columns.check(&e).unwrap_err().differences.len(), 1);
        let right = ChunkProof::from_evidence(
            ProofLevel::ExactChecksum,
            &ChunkEvidence {
                fingerprint: changed.fingerprint.clone(),
                ..e.clone()
            },
        );
        assert!(right.check(&e).is_ok(), "the checksum alone decides an exact proof");

        let fp = ChunkProof::from_evidence(ProofLevel::Fingerprint, &changed);
        let m = fp.check(&e).unwrap_err();
        assert_eq!(
            m.to_string(),
            "fingerprint proof differs: column `name` byte_length: expected 9, found 10"
        );

        let count = ChunkProof {
            level: ProofLevel::CountOnly,
            rows: 3,
            checksum: None,
            fingerprint: None,
        };
        assert!(count.check(&e).is_ok(), "count_only cannot see a changed value");
        let short = ChunkProof { rows: 2, ..count };
        let err = short.verify(&e, "chunk 4 of job j").unwrap_err();
        assert_eq!(
            err.to_string(),
            "verification failed for chunk 4 of job j: extracted vs committed: count_only proof differs: rows: expected 3, found 2"
        );
    }

    #[test]
    fn a_proof_without_what_its_level_needs_fails() {
        let e = evidence();
        let bare = ChunkProof {
            level: ProofLevel::Fingerprint,
            rows: 3,
            checksum: Some(7),
            fingerprint: None,
        };
        assert!(bare.check(&e).is_err());
        let bare = ChunkProof {
            level: ProofLevel::ExactChecksum,
            checksum: None,
            ..bare
        };
        assert!(bare.check(&e).is_err());
    }

    #[test]
    fn level_names_round_trip() {
        for l in [
            ProofLevel::ExactChecksum,
            ProofLevel::Fingerprint,
            ProofLevel::CountOnly,
        ] {
            assert_eq!(ProofLevel::parse(l.as_str()), Some(l));
            assert_eq!(serde_json::to_string(&l).unwrap(), format!("\"{l}\""));
        }
    }
}
