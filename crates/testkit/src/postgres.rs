//! A private PostgreSQL server for tests (issue 3).
