//! The statements of `feedback erase`: count and delete one customer's rows, watch the
//! deletions (mutations) finish, record the erasure (migration 6). The customer_ref and its
//! pattern are always bound parameters; the tables are a closed set ([`ErasedTable`]).

use serde::Deserialize;

use crate::{migrations::render, Ch, Error};

/// A table holding a customer's rows, and the condition selecting them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErasedTable {
    Interactions,
    Ratings,
    DeadLetters,
    /// Copies of the ratings with a comment (migration 9), comment text included.
    RatingComments,
}

impl ErasedTable {
    /// In the order of the erasure record's columns (`rating_comments`, copies of rows
    /// counted under `ratings`, has none: its rows are erased and checked, not recorded).
    pub const ALL: [ErasedTable; 4] = [
        ErasedTable::Interactions,
        ErasedTable::Ratings,
        ErasedTable::DeadLetters,
        ErasedTable::RatingComments,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            ErasedTable::Interactions => "interactions",
            ErasedTable::Ratings => "ratings",
            ErasedTable::DeadLetters => "dead_letters",
            ErasedTable::RatingComments => "rating_comments",
        }
    }

    /// `?` is the customer_ref, `?re` the pattern of [`mention`]: a dead letter's payload
    /// (Avro as text, or JSON) or error mentions the ref as a whole token, so erasing `c-7`
    /// leaves `c-70` alone.
    const fn condition(self) -> &'static str {
        match self {
            ErasedTable::Interactions | ErasedTable::Ratings | ErasedTable::RatingComments => {
                "customer_ref = ?"
            }
            ErasedTable::DeadLetters => "match(payload, ?re) OR match(error, ?re)",
        }
    }

    /// `SELECT count() ...` with `{db}` and the placeholders still in.
    fn count_sql(self) -> String {
        format!(
            "SELECT count() FROM {{db}}.{} WHERE {}",
            self.name(),
            self.condition()
        )
    }

    fn delete_sql(self) -> String {
        format!(
            "ALTER TABLE {{db}}.{} DELETE WHERE {}",
            self.name(),
            self.condition()
        )
    }
}

/// An RE2 pattern matching `customer_ref` not preceded or followed by an identifier
/// character (Avro strings are preceded by a length byte, JSON strings by a quote).
pub fn mention(customer_ref: &str) -> String {
    let mut escaped = String::new();
    for c in customer_ref.chars() {
        if c.is_ascii_punctuation() {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!("(^|[^A-Za-z0-9_.@-]){escaped}($|[^A-Za-z0-9_.@-])")
}

/// `sql` (with `{db}` rendered) with the customer_ref (`?`) and its pattern (`?re`) bound, in
/// order.
fn bind_ref(ch: &Ch, sql: &str, customer_ref: &str) -> clickhouse::query::Query {
    let sql = render(sql, ch.database());
    let is_re: Vec<bool> = sql
        .match_indices('?')
        .map(|(i, _)| sql[i..].starts_with("?re"))
        .collect();
    let mut q = ch.client.query(&sql.replace("?re", "?"));
    let pattern = mention(customer_ref);
    for re in is_re {
        q = if re {
            q.bind(pattern.as_str())
        } else {
            q.bind(customer_ref)
        };
    }
    q
}

/// A ClickHouse string literal, escaped as the client library escapes bound values.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `sql` with `?` and `?re` replaced by the quoted customer_ref and pattern.
fn inline(sql: &str, customer_ref: &str) -> String {
    sql.replace("?re", &literal(&mention(customer_ref)))
        .replace("= ?", &format!("= {}", literal(customer_ref)))
}

/// The statements that count and delete the customer's rows in database `db`, with the
/// values quoted in (for a server the client cannot reach: `feedback erase --print-sql`).
pub fn printed(db: &str, customer_ref: &str) -> Result<Printed, Error> {
    crate::check_database(db)?;
    let count = ErasedTable::ALL
        .iter()
        .map(|t| (t.name(), inline(&render(&t.count_sql(), db), customer_ref)))
        .collect();
    let delete = ErasedTable::ALL
        .iter()
        .map(|t| inline(&render(&t.delete_sql(), db), customer_ref))
        .collect();
    Ok(Printed { count, delete })
}

/// The statements of [`printed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Printed {
    /// `(table, SELECT count() ...)` per table.
    pub count: Vec<(&'static str, String)>,
    /// `ALTER TABLE ... DELETE ...` per table.
    pub delete: Vec<String>,
}

#[derive(clickhouse::Row, Deserialize)]
struct N {
    n: u64,
}

/// The customer's rows in `table`.
pub async fn count_rows(ch: &Ch, table: ErasedTable, customer_ref: &str) -> Result<u64, Error> {
    let sql = format!(
        "SELECT count() AS n FROM {{db}}.{} WHERE {}",
        table.name(),
        table.condition()
    );
    let rows: Vec<N> = bind_ref(ch, &sql, customer_ref)
        .fetch_all()
        .await
        .map_err(|e| ch.err(e))?;
    Ok(rows.first().map(|r| r.n).unwrap_or(0))
}

/// Starts deleting the customer's rows from `table` (a mutation: it runs in the background;
/// see [`pending_mutations`]).
pub async fn delete_rows(ch: &Ch, table: ErasedTable, customer_ref: &str) -> Result<(), Error> {
    bind_ref(ch, &table.delete_sql(), customer_ref)
        .execute()
        .await
        .map_err(|e| ch.err(e))
}

/// Unfinished mutations on the erased tables of the database.
pub async fn pending_mutations(ch: &Ch) -> Result<u64, Error> {
    let rows: Vec<N> = ch
        .client
        .query(&format!(
            "SELECT count() AS n FROM system.mutations WHERE database = ? AND table IN ('{}') AND is_done = 0",
            ErasedTable::ALL.map(ErasedTable::name).join("', '")
        ))
        .bind(ch.database())
        .fetch_all()
        .await
        .map_err(|e| ch.err(e))?;
    Ok(rows.first().map(|r| r.n).unwrap_or(0))
}

/// One row of `{db}.erasures`; `erased_at` is the server's `now()`.
#[derive(Debug, Clone)]
pub struct Erasure<'a> {
    pub customer_ref: &'a str,
    pub reason: &'a str,
    pub requested_by: &'a str,
    /// Rows removed from `interactions`, `ratings` and `dead_letters` (the first three of
    /// [`ErasedTable::ALL`]).
    pub removed: [u64; 3],
    /// No row of the customer is left.
    pub complete: bool,
}

/// Records an erasure in `{db}.erasures` (created by migration 6).
pub async fn record(ch: &Ch, e: &Erasure<'_>) -> Result<(), Error> {
    ch.client
        .query(&render(
            "INSERT INTO {db}.erasures (erased_at, customer_ref, reason, requested_by, interactions, ratings, dead_letters, complete) \
             VALUES (now(), ?, ?, ?, ?, ?, ?, ?)",
            ch.database(),
        ))
        .bind(e.customer_ref)
        .bind(e.reason)
        .bind(e.requested_by)
        .bind(e.removed[0])
        .bind(e.removed[1])
        .bind(e.removed[2])
        .bind(u8::from(e.complete))
        .execute()
        .await
        .map_err(|err| ch.err(err))
}

#[cfg(test)]
mod tests {
    #[test]
    fn printed_statements_quote_the_ref() {
        let super::Printed { count, delete } = super::printed("db", "o'k").unwrap();
        assert_eq!(
            delete[1],
            "ALTER TABLE db.ratings DELETE WHERE customer_ref = 'o\\'k'"
        );
        assert_eq!(count[0].0, "interactions");
        assert_eq!(
            count[0].1,
            "SELECT count() FROM db.interactions WHERE customer_ref = 'o\\'k'"
        );
        assert_eq!(
            delete[2],
            r"ALTER TABLE db.dead_letters DELETE WHERE match(payload, '(^|[^A-Za-z0-9_.@-])o\\\'k($|[^A-Za-z0-9_.@-])') OR match(error, '(^|[^A-Za-z0-9_.@-])o\\\'k($|[^A-Za-z0-9_.@-])')"
        );
        assert!(super::printed("db; DROP", "x").is_err());
    }

    #[test]
    fn mention_pattern_escapes_and_bounds() {
        assert_eq!(
            super::mention("c-7.x"),
            r"(^|[^A-Za-z0-9_.@-])c\-7\.x($|[^A-Za-z0-9_.@-])"
        );
    }
}
