//! A private MariaDB server for tests (issue 3).
