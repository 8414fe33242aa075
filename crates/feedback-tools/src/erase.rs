//! `feedback erase --customer-ref X [--reason ...]`: removes one customer's rows from
//! ClickHouse (interactions, ratings, the copies of their comments in `rating_comments`, and
//! dead letters whose message or error mentions the ref) with `ALTER TABLE ... DELETE`, waits (bounded) until those mutations are done,
//! records the erasure in `{db}.erasures` (migration 6) and prints what it removed.
//!
//! What it does not reach: Kafka topics (records stay until retention removes them),
//! backups, and copies outside ClickHouse; see ARCHITECTURE.md, "Personal data".

use std::time::{Duration, Instant};

use anyhow::Context;
use feedback_clickhouse::queries::erase::{self, ErasedTable, Erasure};
use feedback_clickhouse::Ch;

use feedback_runtime::Common;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// The customer whose rows are removed (the pseudonymous customer_ref of the events).
    #[arg(long, env = "FEEDBACK_ERASE_CUSTOMER_REF")]
    pub customer_ref: String,
    /// Why (e.g. a ticket number of the erasure request); stored in the erasure record.
    #[arg(long, env = "FEEDBACK_ERASE_REASON", default_value = "")]
    pub reason: String,
    /// Who asked; stored in the erasure record (default: $USER).
    #[arg(long, env = "USER", default_value = "")]
    pub requested_by: String,
    /// Longest wait for ClickHouse to finish the deletions, in seconds.
    #[arg(long, env = "FEEDBACK_ERASE_WAIT_SECS", default_value_t = 300)]
    pub wait_secs: u64,
    /// Do not connect: print, as JSON, the statements that count and delete the customer's
    /// rows (`{"count": [[table, sql], ...], "delete": [sql, ...]}`), for a server reached
    /// another way (the tests run them on current ClickHouse with chDB).
    #[arg(long, env = "FEEDBACK_ERASE_PRINT_SQL")]
    pub print_sql: bool,
}

/// The statements of `--print-sql`.
fn plan(db: &str, customer_ref: &str) -> anyhow::Result<serde_json::Value> {
    let p = erase::printed(db, customer_ref).context(
        "--print-sql needs a database name (--clickhouse-database) of letters, digits and _",
    )?;
    Ok(serde_json::json!({ "count": p.count, "delete": p.delete }))
}

async fn count(ch: &Ch, table: ErasedTable, customer_ref: &str) -> anyhow::Result<u64> {
    erase::count_rows(ch, table, customer_ref)
        .await
        .with_context(|| {
            format!(
                "counting {}.{} rows of the customer",
                ch.database(),
                table.name()
            )
        })
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
            serde_json::to_string_pretty(&plan(&args.common.clickhouse_database, &customer_ref)?)?
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let ch = args.common.clickhouse()?;
    let mut before = Vec::new();
    for table in ErasedTable::ALL {
        before.push(count(&ch, table, &customer_ref).await?);
    }
    for table in ErasedTable::ALL {
        erase::delete_rows(&ch, table, &customer_ref)
            .await
            .with_context(|| {
                format!(
                    "deleting the customer's rows from {}.{}",
                    ch.database(),
                    table.name()
                )
            })?;
    }
    // Mutations run in the background; wait (bounded) until they are done and the rows gone.
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let mut after;
    loop {
        after = Vec::new();
        for table in ErasedTable::ALL {
            after.push(count(&ch, table, &customer_ref).await?);
        }
        let open = erase::pending_mutations(&ch)
            .await
            .context("reading system.mutations")?;
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
    erase::record(
        &ch,
        &Erasure {
            customer_ref: &customer_ref,
            reason: &args.reason,
            requested_by: &args.requested_by,
            removed: [removed[0], removed[1], removed[2]],
            complete,
        },
    )
    .await
        .with_context(|| {
            format!(
                "recording the erasure in {}.erasures (run `feedback migrate` first: migration 6 creates it)",
                ch.database()
            )
        })?;
    println!(
        "erased customer_ref {customer_ref:?} from {}: interactions {}, ratings {}, dead_letters {}, rating_comments {}",
        ch.database(),
        removed[0],
        removed[1],
        removed[2],
        removed[3]
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

#[cfg(test)]
mod tests {
    /// `--print-sql` prints feedback-clickhouse's statements (whose text that crate's tests
    /// check) as JSON: counts with their table, then the deletes, and refuses a bad name.
    #[test]
    fn printed_plan_is_the_statements_as_json() {
        let p = super::plan("db", "o'k").unwrap();
        let want = feedback_clickhouse::queries::erase::printed("db", "o'k").unwrap();
        for (i, (table, sql)) in want.count.iter().enumerate() {
            assert_eq!(p["count"][i][0], *table);
            assert_eq!(p["count"][i][1], *sql);
        }
        for (i, sql) in want.delete.iter().enumerate() {
            assert_eq!(p["delete"][i], *sql);
        }
        assert_eq!(
            p["delete"].as_array().unwrap().len(),
            feedback_clickhouse::queries::erase::ErasedTable::ALL.len()
        );
        assert!(super::plan("db; DROP", "x").is_err());
    }
}
