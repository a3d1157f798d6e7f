//! The conformance suite against a private PostgreSQL server (issue 3).
