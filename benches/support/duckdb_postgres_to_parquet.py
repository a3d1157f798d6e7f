"""DuckDB's side of benches/postgres_lineitem.rs, run by the bench in its own venv
(scripts/bench-venv) as a child process it measures like backhaul.

    python duckdb_postgres_to_parquet.py copy TABLE OUT.parquet THREADS   (libpq PG* env vars)
    python duckdb_postgres_to_parquet.py count FILE.parquet

`copy` reads public.TABLE through DuckDB's Postgres scanner and writes ONE zstd Parquet file,
printing the rows COPY wrote; `count` prints the rows in a Parquet file (not measured). The
extension is LOADed from the installed wheel `duckdb-extension-postgres-scanner`, with
automatic extension install and load off, so nothing is downloaded.
"""

import pathlib
import sys

import duckdb


def scanner_extension() -> pathlib.Path:
    import duckdb_extension_postgres_scanner as wheel

    found = sorted(pathlib.Path(wheel.__file__).parent.glob("extensions/*/postgres_scanner.duckdb_extension"))
    if not found:
        sys.exit(f"no postgres_scanner.duckdb_extension under {pathlib.Path(wheel.__file__).parent}")
    return found[-1]


def copy(table: str, out: str, threads: int) -> None:
    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute(f"SET threads = {threads}")
    con.execute(f"LOAD '{scanner_extension()}'")
    # An empty connection string: libpq takes host, port, user, password and database from
    # the PG* environment variables the bench sets, so the password is in no argument.
    con.execute("ATTACH '' AS pg (TYPE postgres, READ_ONLY)")
    rows = con.execute(
        f"COPY (SELECT * FROM pg.public.{table}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
    ).fetchone()[0]
    print(rows)


def count(path: str) -> None:
    print(duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()[0])


if __name__ == "__main__":
    if sys.argv[1:2] == ["copy"] and len(sys.argv) == 5:
        copy(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1:2] == ["count"] and len(sys.argv) == 3:
        count(sys.argv[2])
    else:
        sys.exit(__doc__)
