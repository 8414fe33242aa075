//! `feedback erase --customer-ref X [--reason ...]`: removes one customer's rows from
//! ClickHouse (interactions, ratings, and dead letters whose message or error mentions the
//! ref) with `ALTER TABLE ... DELETE`, waits (bounded) until those mutations are done,
//! records the erasure in `{db}.erasures` (migration 6) and prints what it removed.
//!
//! What it does not reach: Kafka topics (records stay until retention removes them),
//! backups, and copies outside ClickHouse; see ARCHITECTURE.md, "Personal data".

use std::time::{Duration, Instant};

use anyhow::Context;
use feedback_clickhouse::migrations::render;
use feedback_clickhouse::Ch;
use serde::Deserialize;

use feedback_runtime::Common;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// The customer whose rows are removed (the pseudonymous customer_ref of the events).
    #[arg(long)]
    pub customer_ref: String,
    /// Why (e.g. a ticket number of the erasure request); stored in the erasure record.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Who asked; stored in the erasure record (default: $USER).
    #[arg(long, env = "USER", default_value = "")]
    pub requested_by: String,
    /// Longest wait for ClickHouse to finish the deletions, in seconds.
    #[arg(long, default_value_t = 300)]
    pub wait_secs: u64,
    /// Do not connect: print, as JSON, the statements that count and delete the customer's
    /// rows (`{"count": [[table, sql], ...], "delete": [sql, ...]}`), for a server reached
    /// another way (the tests run them on current ClickHouse with chDB).
    #[arg(long)]
    pub print_sql: bool,
}

/// Each table, and the condition selecting the customer's rows. `?` is the customer_ref,
/// `?re` the pattern of [`mention`]: a dead letter's payload (Avro as text, or JSON) or
/// error mentions the ref as a whole token, so erasing `c-7` leaves `c-70` alone.
const TARGETS: [(&str, &str); 3] = [
    ("interactions", "customer_ref = ?"),
    ("ratings", "customer_ref = ?"),
    ("dead_letters", "match(payload, ?re) OR match(error, ?re)"),
];

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

/// `sql` with the customer_ref (`?`) and its pattern (`?re`) bound, in order.
fn bind_ref(ch: &Ch, sql: &str, customer_ref: &str) -> clickhouse::query::Query {
    let is_re: Vec<bool> = sql
        .match_indices('?')
        .map(|(i, _)| sql[i..].starts_with("?re"))
        .collect();
    let mut q = ch.client().query(&sql.replace("?re", "?"));
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

/// The statements of `--print-sql`.
fn plan(db: &str, customer_ref: &str) -> serde_json::Value {
    let count: Vec<(&str, String)> = TARGETS
        .iter()
        .map(|(t, c)| {
            (
                *t,
                inline(
                    &render(&format!("SELECT count() FROM {{db}}.{t} WHERE {c}"), db),
                    customer_ref,
                ),
            )
        })
        .collect();
    let delete: Vec<String> = TARGETS
        .iter()
        .map(|(t, c)| {
            inline(
                &render(&format!("ALTER TABLE {{db}}.{t} DELETE WHERE {c}"), db),
                customer_ref,
            )
        })
        .collect();
    serde_json::json!({ "count": count, "delete": delete })
}

#[cfg(test)]
mod tests {
    #[test]
    fn printed_statements_quote_the_ref() {
        let p = super::plan("db", "o'k");
        assert_eq!(
            p["delete"][1],
            "ALTER TABLE db.ratings DELETE WHERE customer_ref = 'o\\'k'"
        );
        assert_eq!(
            p["count"][0][1],
            "SELECT count() FROM db.interactions WHERE customer_ref = 'o\\'k'"
        );
    }

    #[test]
    fn mention_pattern_escapes_and_bounds() {
        assert_eq!(
            super::mention("c-7.x"),
            r"(^|[^A-Za-z0-9_.@-])c\-7\.x($|[^A-Za-z0-9_.@-])"
        );
    }
}

#[derive(clickhouse::Row, Deserialize)]
struct N {
    n: u64,
}

async fn count(ch: &Ch, table: &str, cond: &str, customer_ref: &str) -> anyhow::Result<u64> {
    let sql = render(
        &format!("SELECT count() AS n FROM {{db}}.{table} WHERE {cond}"),
        ch.database(),
    );
    let rows: Vec<N> = bind_ref(ch, &sql, customer_ref)
        .fetch_all()
        .await
        .with_context(|| format!("counting {}.{table} rows of the customer", ch.database()))?;
    Ok(rows.first().map(|r| r.n).unwrap_or(0))
}

/// Unfinished mutations on the erased tables.
async fn pending(ch: &Ch) -> anyhow::Result<u64> {
    let rows: Vec<N> = ch
        .client()
        .query("SELECT count() AS n FROM system.mutations WHERE database = ? AND table IN ('interactions', 'ratings', 'dead_letters') AND is_done = 0")
        .bind(ch.database())
        .fetch_all()
        .await
        .context("reading system.mutations")?;
    Ok(rows.first().map(|r| r.n).unwrap_or(0))
}

pub async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let customer_ref = args.customer_ref.trim().to_string();
    anyhow::ensure!(
        !customer_ref.is_empty(),
        "--customer-ref is empty; give the customer_ref whose rows are to be removed"
    );
    if args.print_sql {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan(&args.common.clickhouse_database, &customer_ref))?
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let ch = args.common.clickhouse()?;
    let mut before = Vec::new();
    for (table, cond) in TARGETS {
        before.push(count(&ch, table, cond, &customer_ref).await?);
    }
    for (table, cond) in TARGETS {
        let sql = render(
            &format!("ALTER TABLE {{db}}.{table} DELETE WHERE {cond}"),
            ch.database(),
        );
        bind_ref(&ch, &sql, &customer_ref)
            .execute()
            .await
            .with_context(|| {
                format!(
                    "deleting the customer's rows from {}.{table}",
                    ch.database()
                )
            })?;
    }
    // Mutations run in the background; wait (bounded) until they are done and the rows gone.
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let mut after;
    loop {
        after = Vec::new();
        for (table, cond) in TARGETS {
            after.push(count(&ch, table, cond, &customer_ref).await?);
        }
        let open = pending(&ch).await?;
        if open == 0 && after.iter().all(|&n| n == 0) {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let complete = after.iter().all(|&n| n == 0);
    let removed: Vec<u64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| b - a.min(b))
        .collect();
    ch.client()
        .query(&render(
            "INSERT INTO {db}.erasures (erased_at, customer_ref, reason, requested_by, interactions, ratings, dead_letters, complete) \
             VALUES (now(), ?, ?, ?, ?, ?, ?, ?)",
            ch.database(),
        ))
        .bind(customer_ref.as_str())
        .bind(args.reason.as_str())
        .bind(args.requested_by.as_str())
        .bind(removed[0])
        .bind(removed[1])
        .bind(removed[2])
        .bind(u8::from(complete))
        .execute()
        .await
        .with_context(|| {
            format!(
                "recording the erasure in {}.erasures (run `feedback migrate` first: migration 6 creates it)",
                ch.database()
            )
        })?;
    println!(
        "erased customer_ref {customer_ref:?} from {}: interactions {}, ratings {}, dead_letters {}",
        ch.database(),
        removed[0],
        removed[1],
        removed[2]
    );
    if complete {
        println!("recorded in {}.erasures", ch.database());
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: after {}s ClickHouse still has rows of this customer (interactions {}, ratings {}, dead_letters {}); the deletions keep running in the background. Check system.mutations, then run the same command again (it is idempotent); the erasure is recorded with complete = 0",
            args.wait_secs, after[0], after[1], after[2]
        );
        Ok(std::process::ExitCode::FAILURE)
    }
}
