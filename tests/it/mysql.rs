//! The conformance suite against a private MariaDB server (issue 3).
