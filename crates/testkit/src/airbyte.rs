//! Airbyte's `source-faker` connector (PyPI `airbyte-source-faker`, pinned in
//! `scripts/ensure-servers`, which installs it into `.backhaul-test/airbyte-faker`), for the
//! Airbyte source's tests. It is a command, not a server: tests run it through the source.

use std::path::PathBuf;

use crate::fakesnow::REQUIRE_SERVERS_ENV;
use crate::tool;

/// The `source-faker` executable: `$BACKHAUL_AIRBYTE_FAKER`, else the venv's. `None` (with a
/// note on stderr) when it is not installed and `BACKHAUL_REQUIRE_SERVERS` is unset; panics
/// when it is required and missing.
pub fn source_faker() -> Option<PathBuf> {
    match tool::installed(
        "BACKHAUL_AIRBYTE_FAKER",
        "airbyte-faker",
        "bin/source-faker",
        "the Airbyte source tests",
    ) {
        Ok(path) if path.is_file() => Some(path),
        Ok(dir) => Some(dir.join("bin/source-faker")),
        Err(e) if std::env::var_os(REQUIRE_SERVERS_ENV).is_none() => {
            eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("{e} ({REQUIRE_SERVERS_ENV} is set)"),
    }
}
