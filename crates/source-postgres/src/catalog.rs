//! Reading a table's definition from the catalog: which relation, which columns and how each
//! is read, the cursor, the primary key.

use std::collections::HashMap;
use std::sync::Arc;

use crate::spec::PostgresSourceSpec;
use arrow::datatypes::Schema;
use backhaul_core::connector::{ColumnOrigin, TableDescription};
use backhaul_core::cursor::CursorRange;
use backhaul_core::{Error, Result};

use crate::blockscan::Blocks;
use crate::connect::Conn;
use crate::sql::{cursor_literal, qualified, quote_ident};
use crate::types::{CursorType, PgKind, Policies, TypeRow, resolve};

/// One extracted column.
#[derive(Debug, Clone)]
pub(crate) struct PgColumn {
    pub name: String,
    pub kind: PgKind,
    pub nullable: bool,
    /// As `format_type` prints it, e.g. `numeric(15,2)`.
    pub source_type: String,
}

/// A described table: what `COPY` selects and how each column is decoded.
#[derive(Debug, Clone)]
pub(crate) struct PgTable {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `pg_class.relkind`: r table, p partitioned table, v view, m materialized view, f foreign.
    pub relkind: u8,
    /// Extracted columns, in order.
    pub columns: Vec<PgColumn>,
    /// Index of the cursor in `columns`.
    pub cursor: usize,
    pub cursor_type: CursorType,
    /// Whether the cursor column is declared NOT NULL.
    pub cursor_not_null: bool,
    pub description: TableDescription,
}

impl PgTable {
    /// `schema.table`, for messages.
    pub(crate) fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// The quoted, schema-qualified name for SQL.
    pub(crate) fn sql_name(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    pub(crate) fn cursor_name(&self) -> &str {
        &self.columns[self.cursor].name
    }

    /// `cursor >= from AND cursor < to`, bounds as typed literals.
    pub(crate) fn range_predicate(&self, range: CursorRange) -> String {
        let c = quote_ident(self.cursor_name());
        format!(
            "{c} >= {} AND {c} < {}",
            cursor_literal(self.cursor_type, range.from),
            cursor_literal(self.cursor_type, range.to)
        )
    }

    /// The `SELECT` of one chunk's rows, or of the rows of `blocks` among them.
    pub(crate) fn select_sql(&self, range: CursorRange, blocks: Option<Blocks>) -> String {
        let columns: Vec<String> = self.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let mut predicate = self.range_predicate(range);
        if let Some(ctid) = blocks.and_then(Blocks::predicate) {
            predicate = format!("{predicate} AND {ctid}");
        }
        format!(
            "SELECT {} FROM {} WHERE {predicate}",
            columns.join(", "),
            self.sql_name()
        )
    }

    /// The binary `COPY` of one chunk, or of one block-range scan of it.
    pub(crate) fn copy_sql(&self, range: CursorRange, blocks: Option<Blocks>) -> String {
        format!("COPY ({}) TO STDOUT (FORMAT binary)", self.select_sql(range, blocks))
    }

    /// Columns that identify a row in error messages: the primary key when it is extracted,
    /// else the cursor.
    pub(crate) fn row_key_columns(&self) -> Vec<usize> {
        let keys: Vec<usize> = self
            .description
            .key_columns
            .iter()
            .filter_map(|k| self.columns.iter().position(|c| &c.name == k))
            .collect();
        if keys.is_empty() { vec![self.cursor] } else { keys }
    }
}

struct AttributeRow {
    name: String,
    type_oid: u32,
    typmod: i32,
    not_null: bool,
    source_type: String,
    can_select: bool,
}

/// Reads the table of `spec` and checks the columns and cursor.
pub(crate) async fn describe(conn: &Conn, spec: &PostgresSourceSpec, policies: &Policies) -> Result<PgTable> {
    let client = &conn.client;
    let object = format!("table {}", spec.connection.table);
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = pg_catalog.to_regclass($1)",
            &[&spec.connection.table],
        )
        .await
        .map_err(|e| invalid_name(conn.error(&e, "look up table"), &object))?;
    let Some(rel) = rows.first() else {
        return Err(Error::InvalidObject {
            object,
            message: format!(
                "no such table or view in database `{}` (unqualified names are looked up in the search_path; write `schema.table`)",
                spec.connection.database
            ),
        });
    };
    let oid: u32 = rel.get(0);
    let schema: String = rel.get(1);
    let name: String = rel.get(2);
    let relkind = rel.get::<_, String>(3).bytes().next().unwrap_or(b'r');
    if !matches!(relkind, b'r' | b'p' | b'v' | b'm' | b'f') {
        return Err(Error::InvalidObject {
            object,
            message: format!("`{schema}.{name}` is not a table, view or materialized view"),
        });
    }
    let display = format!("{schema}.{name}");

    let attributes: Vec<AttributeRow> = client
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull, \
                    pg_catalog.format_type(a.atttypid, a.atttypmod), \
                    pg_catalog.has_column_privilege(a.attrelid, a.attnum, 'SELECT') \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| conn.error(&e, "read columns"))?
        .iter()
        .map(|r| AttributeRow {
            name: r.get(0),
            type_oid: r.get(1),
            typmod: r.get(2),
            not_null: r.get(3),
            source_type: r.get(4),
            can_select: r.get(5),
        })
        .collect();

    let all_names = || {
        attributes
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let selected: Vec<&AttributeRow> = match &spec.connection.columns {
        None => attributes.iter().collect(),
        Some(names) => {
            let mut out = Vec::with_capacity(names.len());
            for n in names {
                let a = attributes
                    .iter()
                    .find(|a| &a.name == n)
                    .ok_or_else(|| Error::InvalidObject {
                        object: format!("column {display}.{n}"),
                        message: format!("no such column (source.columns); the columns are: {}", all_names()),
                    })?;
                out.push(a);
            }
            out
        }
    };
    if !selected.iter().any(|a| a.name == spec.connection.cursor) {
        return Err(Error::InvalidObject {
            object: format!("column {display}.{}", spec.connection.cursor),
            message: format!("no such column (source.cursor); the columns are: {}", all_names()),
        });
    }
    let denied: Vec<&str> = selected
        .iter()
        .filter(|a| !a.can_select)
        .map(|a| a.name.as_str())
        .collect();
    if !denied.is_empty() {
        return Err(Error::InvalidObject {
            object: format!("postgres privileges of `{}`", spec.connection.user),
            message: format!("no SELECT privilege on {display} column(s) {}", denied.join(", ")),
        });
    }

    let types = type_rows(conn, selected.iter().map(|a| a.type_oid).collect()).await?;
    let mut columns = Vec::with_capacity(selected.len());
    let mut fields = Vec::with_capacity(selected.len());
    let mut origins = Vec::with_capacity(selected.len());
    let mut unsupported = Vec::new();
    for a in &selected {
        match resolve(a.type_oid, a.typmod, &types, policies) {
            Ok(kind) => {
                let nullable = !a.not_null;
                fields.push(kind.field(&a.name, nullable));
                let unconstrained = is_unconstrained_numeric(a.type_oid, a.typmod, &types);
                origins.push(ColumnOrigin {
                    name: a.name.clone(),
                    source_type: a.source_type.clone(),
                    lossy_step: kind.lossy_step(unconstrained, policies),
                });
                columns.push(PgColumn {
                    name: a.name.clone(),
                    kind,
                    nullable,
                    source_type: a.source_type.clone(),
                });
            }
            Err(why) => unsupported.push(format!("`{}` ({}): {why}", a.name, a.source_type)),
        }
    }
    if !unsupported.is_empty() {
        return Err(Error::TypeFidelity(format!(
            "table {display}: {}. Leave such columns out with `source.columns`, or cast them in a view",
            unsupported.join("; ")
        )));
    }

    let cursor = columns
        .iter()
        .position(|c| c.name == spec.connection.cursor)
        .expect("checked above");
    let cursor_type = CursorType::of(&columns[cursor].kind).ok_or_else(|| Error::InvalidObject {
        object: format!("column {display}.{}", spec.connection.cursor),
        message: format!(
            "its type {} cannot bound chunks; use a timestamp, timestamptz, date, smallint, integer or bigint column",
            columns[cursor].source_type
        ),
    })?;
    let cursor_not_null = !columns[cursor].nullable;

    let keys: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_catalog.pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(|e| conn.error(&e, "read primary key"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // The description lists key columns only when all of them are extracted.
    let key_columns = if keys.iter().all(|k| columns.iter().any(|c| &c.name == k)) {
        keys
    } else {
        Vec::new()
    };

    let description = TableDescription {
        schema: Arc::new(Schema::new(fields)),
        cursor_column: spec.connection.cursor.clone(),
        cursor_kind: cursor_type.kind(),
        key_columns,
        columns: origins,
    };
    Ok(PgTable {
        oid,
        schema,
        name,
        relkind,
        columns,
        cursor,
        cursor_type,
        cursor_not_null,
        description,
    })
}

/// A numeric column (or array of numeric, or domain over either) declared without precision.
fn is_unconstrained_numeric(oid: u32, typmod: i32, types: &HashMap<u32, TypeRow>) -> bool {
    match oid {
        1700 => typmod < 4,
        _ => match types.get(&oid) {
            Some(t) if t.typtype == b'd' => {
                let typmod = if typmod >= 0 { typmod } else { t.base_typmod };
                is_unconstrained_numeric(t.base, typmod, types)
            }
            Some(t) if t.category == b'A' && t.elem != 0 => is_unconstrained_numeric(t.elem, typmod, types),
            _ => false,
        },
    }
}

/// `pg_type` rows of `oids` and of every type they refer to (domain bases, array elements).
async fn type_rows(conn: &Conn, oids: Vec<u32>) -> Result<HashMap<u32, TypeRow>> {
    let rows = conn
        .client
        .query(
            "WITH RECURSIVE t(oid) AS ( \
                SELECT unnest($1::oid[]) \
                UNION \
                SELECT CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.typelem END \
                FROM pg_catalog.pg_type ty JOIN t ON ty.oid = t.oid \
                WHERE ty.typtype = 'd' OR (ty.typcategory = 'A' AND ty.typelem <> 0)) \
             SELECT ty.oid, ty.typname::text, ty.typtype::text, ty.typcategory::text, ty.typbasetype, \
                    ty.typtypmod, ty.typelem \
             FROM pg_catalog.pg_type ty WHERE ty.oid IN (SELECT oid FROM t)",
            &[&oids],
        )
        .await
        .map_err(|e| conn.error(&e, "read column types"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let byte = |i: usize| r.get::<_, String>(i).bytes().next().unwrap_or(b' ');
            (
                r.get::<_, u32>(0),
                TypeRow {
                    name: r.get(1),
                    typtype: byte(2),
                    category: byte(3),
                    base: r.get(4),
                    base_typmod: r.get(5),
                    elem: r.get(6),
                },
            )
        })
        .collect())
}

/// A malformed table name (`a.b.c.d`, cross-database) is the user's to fix, like a missing one.
fn invalid_name(e: Error, object: &str) -> Error {
    match e {
        Error::InvalidObject { message, .. } => Error::InvalidObject {
            object: object.to_string(),
            message,
        },
        other => other,
    }
}
