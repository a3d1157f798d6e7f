//! Collecting violated rules so one run reports all of them, not only the first.

use std::fmt;

/// One violated rule of a connector contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The check that found it, e.g. `split` or `fencing`; stable, so tests can match on it.
    pub check: &'static str,
    /// What was expected and what happened instead.
    pub message: String,
}

/// Every violation found by one conformance run, in the order found.
///
/// `Debug` prints the same readable list as `Display`, so `.unwrap()` on a check's result
/// fails a test with one line per violation.
#[derive(Clone, PartialEq, Eq)]
pub struct Violations {
    /// What was checked, e.g. `source` or `destination`.
    pub subject: &'static str,
    /// The violations; never empty.
    pub items: Vec<Violation>,
}

impl Violations {
    /// Whether any violation came from `check`.
    pub fn has(&self, check: &str) -> bool {
        self.items.iter().any(|v| v.check == check)
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.items.len();
        write!(
            f,
            "{} conformance: {n} violation{}:",
            self.subject,
            if n == 1 { "" } else { "s" }
        )?;
        for v in &self.items {
            write!(f, "\n  [{}] {}", v.check, v.message)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Violations {}

/// Accumulates violations during a run.
pub(crate) struct Checker {
    subject: &'static str,
    items: Vec<Violation>,
}

impl Checker {
    pub(crate) fn new(subject: &'static str) -> Self {
        Checker {
            subject,
            items: Vec::new(),
        }
    }

    pub(crate) fn fail(&mut self, check: &'static str, message: impl Into<String>) {
        self.items.push(Violation {
            check,
            message: message.into(),
        });
    }

    /// Records a violation unless `ok`; returns `ok` so callers can skip dependent checks.
    pub(crate) fn ensure(&mut self, ok: bool, check: &'static str, message: impl FnOnce() -> String) -> bool {
        if !ok {
            self.fail(check, message());
        }
        ok
    }

    /// `Err` with everything found, or `Ok(report)` when nothing was.
    pub(crate) fn finish<T>(self, report: T) -> Result<T, Violations> {
        if self.items.is_empty() {
            Ok(report)
        } else {
            Err(Violations {
                subject: self.subject,
                items: self.items,
            })
        }
    }

    /// Records a final violation and hands over everything found, for a run that stops
    /// inside a helper (the checker itself stays with its owner).
    pub(crate) fn take(&mut self, check: &'static str, message: impl Into<String>) -> Violations {
        self.fail(check, message);
        Violations {
            subject: self.subject,
            items: std::mem::take(&mut self.items),
        }
    }

    /// Ends a run that cannot go on after the violations recorded so far.
    pub(crate) fn stop<T>(self) -> Result<T, Violations> {
        debug_assert!(!self.items.is_empty(), "stopping a run without a violation");
        Err(Violations {
            subject: self.subject,
            items: self.items,
        })
    }

    /// Ends a run that cannot go on after `check` failed.
    pub(crate) fn abort<T>(mut self, check: &'static str, message: impl Into<String>) -> Result<T, Violations> {
        self.fail(check, message);
        Err(Violations {
            subject: self.subject,
            items: self.items,
        })
    }
}
