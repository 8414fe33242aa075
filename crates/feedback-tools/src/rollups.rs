//! `feedback rollups rebuild | status` and `feedback retention`: the rollups' operator side.
//! The SQL and the exactly-once argument live in `feedback_clickhouse::rollups`.

use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use feedback_clickhouse::rollups::Coverage;
use feedback_clickhouse::Ch;
use feedback_runtime::Common;

/// Options of `feedback rollups`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Recompute the rollups of a time range exactly from the raw tables (an upgrade, a
    /// repair, a backfill). Whole UTC days; safe while the pipeline runs; running it twice
    /// changes nothing the second time. Days whose raw rows are gone (retention) are kept.
    Rebuild(RebuildArgs),
    /// Compare what the raw tables hold with what the rollups count.
    Status(StatusArgs),
}

#[derive(clap::Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub common: Common,
    /// First day (UTC) to rebuild: `2026-03-01` or an RFC 3339 time (its day). Default: the
    /// oldest raw row's day.
    #[arg(long, env = "FEEDBACK_ROLLUPS_FROM", value_parser = parse_day)]
    pub from: Option<u32>,
    /// End of the range (exclusive; a time inside a day includes that day). Default: after
    /// the newest raw row.
    #[arg(long, env = "FEEDBACK_ROLLUPS_TO", value_parser = parse_end)]
    pub to: Option<u32>,
    /// Do not connect: print the one `INSERT ... SELECT` that counts the raw rows of
    /// `--from`..`--to` (both required) into rollups that hold nothing of that range yet,
    /// for servers reached another way (chDB in the tests).
    #[arg(long, env = "FEEDBACK_ROLLUPS_PRINT_BACKFILL_SQL")]
    pub print_backfill_sql: bool,
}

/// Options of `feedback retention`.
#[derive(clap::Args)]
pub struct RetentionArgs {
    #[command(flatten)]
    pub common: Common,
    /// Keep raw rows (interactions, ratings) this many days; the rollups keep everything.
    /// At least 15: the board's comments read the last 24 hours and join interactions up to
    /// 7 days older; a margin of a week more.
    #[arg(long, env = "FEEDBACK_RETENTION_RAW_DAYS")]
    pub raw_days: u32,
    /// Print what would be dropped, change nothing.
    #[arg(long, env = "FEEDBACK_RETENTION_DRY_RUN")]
    pub dry_run: bool,
}

/// The fewest days of raw rows `retention` keeps (see `RetentionArgs::raw_days`).
pub const MIN_RAW_DAYS: u32 = 15;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: Common,
}

const DAY: u32 = 86400;

fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .map_err(|_| {
            format!(
                "{s:?} is neither a day (2026-03-01) nor an RFC 3339 time (2026-03-01T10:00:00Z)"
            )
        })
}

fn to_u32(secs: i64, s: &str) -> Result<u32, String> {
    u32::try_from(secs)
        .map_err(|_| format!("{s:?} is outside ClickHouse's DateTime range (1970 to 2106)"))
}

/// The start of the day holding `s`.
fn parse_day(s: &str) -> Result<u32, String> {
    let t = to_u32(parse_time(s)?, s)?;
    Ok(t - t % DAY)
}

/// The end of the range: a midnight stays, a time inside a day rounds up to the next one.
fn parse_end(s: &str) -> Result<u32, String> {
    let t = to_u32(parse_time(s)?, s)?;
    Ok(t.div_ceil(DAY) * DAY)
}

/// The start of the month after `yyyymm` (UTC seconds), `None` if it is not a month.
fn month_end(yyyymm: &str) -> Option<i64> {
    let n: i32 = yyyymm.parse().ok()?;
    let (y, m) = (n / 100, (n % 100) as u32);
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Some(
        NaiveDate::from_ymd_opt(y, m, 1)?
            .and_hms_opt(0, 0, 0)?
            .and_utc()
            .timestamp(),
    )
}

/// Drops the raw months wholly older than the horizon (a day of margin for the server's time
/// zone, which `toYYYYMM` uses) and, where the server has TTL, sets it.
pub async fn retention(args: RetentionArgs) -> anyhow::Result<()> {
    use feedback_clickhouse::queries::retention as q;
    if args.raw_days < MIN_RAW_DAYS {
        anyhow::bail!(
            "--raw-days {} is too short: keep at least {MIN_RAW_DAYS} days of raw rows (the board's \
             comments read the last 24 hours, plus two weeks of margin)",
            args.raw_days
        );
    }
    let ch = args.common.clickhouse()?;
    let server = feedback_clickhouse::migrations::parse_version(&ch.server_version().await?);
    let horizon = Utc::now().timestamp() - i64::from(args.raw_days) * i64::from(DAY);
    let parts = q::raw_partitions(&ch).await.context(
        "cannot list the raw tables' partitions; is ClickHouse up and the schema migrated (`feedback migrate`)?",
    )?;
    let mut dropped = 0u64;
    for p in &parts {
        let Some(end) = month_end(&p.partition) else {
            continue;
        };
        if end + i64::from(DAY) > horizon {
            continue;
        }
        println!(
            "{} {}.{} month {} ({} rows)",
            if args.dry_run {
                "would drop"
            } else {
                "dropping"
            },
            ch.database(),
            p.table,
            p.partition,
            p.rows
        );
        if !args.dry_run {
            q::drop_month(&ch, &p.table, &p.partition)
                .await
                .with_context(|| format!("dropping {} month {}", p.table, p.partition))?;
        }
        if q::EVENT_TABLES.contains(&p.table.as_str()) {
            dropped += p.rows;
        }
    }
    if server >= (19, 6) {
        for t in q::RAW_TABLES {
            if args.dry_run {
                println!(
                    "would set TTL occurred_at + INTERVAL {} DAY on {t}",
                    args.raw_days
                );
            } else {
                q::set_ttl(&ch, t, args.raw_days).await?;
                println!(
                    "TTL occurred_at + INTERVAL {} DAY set on {t}",
                    args.raw_days
                );
            }
        }
    } else {
        println!(
            "ClickHouse {}.{} has no TTL: run `feedback retention` daily (whole months are dropped)",
            server.0, server.1
        );
    }
    println!(
        "{} {dropped} raw row(s) older than {} days; the rollups keep every day",
        if args.dry_run {
            "would remove"
        } else {
            "removed"
        },
        args.raw_days
    );
    Ok(())
}

fn day_name(secs: u32) -> String {
    DateTime::<Utc>::from_timestamp(i64::from(secs), 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| secs.to_string())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Rebuild(a) => rebuild(a).await,
        Command::Status(a) => status(a).await,
    }
}

/// What `migrate` and `status` say about the rollups: `None` when they count every raw row.
pub fn advice(c: &Coverage) -> Option<String> {
    let behind = c.raw_ratings as i64 != c.rolled_ratings
        || c.raw_interactions as i64 != c.rolled_interactions
        || c.raw_comments as i64 != c.rolled_comments;
    behind.then(|| {
        format!(
            "the rollups count {} of {} ratings, {} of {} interactions and {} of {} comments in \
             the raw tables; run `feedback rollups rebuild` to recompute them from the raw rows \
             (safe while the pipeline runs; equal counts can also differ after raw rows expired \
             or were erased; until then the latest comments of an uncounted hour are read from \
             the whole last day, slower but complete)",
            c.rolled_ratings,
            c.raw_ratings,
            c.rolled_interactions,
            c.raw_interactions,
            c.rolled_comments,
            c.raw_comments
        )
    })
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let ch = args.common.clickhouse()?;
    let c = ch.rollup_coverage().await.context(
        "cannot read the rollups; is ClickHouse up and the schema migrated (`feedback migrate`)?",
    )?;
    println!(
        "raw: {} ratings, {} interactions, {} comments; rollups: {} ratings, {} interactions, {} comments",
        c.raw_ratings,
        c.raw_interactions,
        c.raw_comments,
        c.rolled_ratings,
        c.rolled_interactions,
        c.rolled_comments
    );
    match advice(&c) {
        Some(a) => println!("{a}"),
        None => println!("the rollups count every raw row"),
    }
    Ok(())
}

async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    if args.print_backfill_sql {
        let (Some(from), Some(to)) = (args.from, args.to) else {
            anyhow::bail!("--print-backfill-sql needs --from and --to (it does not connect to read the raw rows' range)");
        };
        println!(
            "{}",
            feedback_clickhouse::rollups::backfill_sql(&args.common.clickhouse_database, from, to)
        );
        return Ok(());
    }
    let ch: Ch = args.common.clickhouse()?;
    if ch.rebuild_running().await? {
        anyhow::bail!(
            "another `feedback rollups rebuild` of database {} is running (see system.processes, \
             query_id starting with {}{}/); wait for it to finish",
            ch.database(),
            feedback_clickhouse::rollups::REBUILD_QUERY_PREFIX,
            ch.database()
        );
    }
    let coverage = ch.rollup_coverage().await.context(
        "cannot read the raw tables and rollups; is ClickHouse up and the schema migrated (`feedback migrate`)?",
    )?;
    let Some((first, last)) = coverage.raw_range() else {
        println!("the raw tables are empty: nothing to rebuild");
        return Ok(());
    };
    let from = args.from.unwrap_or(first - first % DAY);
    let to = args.to.unwrap_or((last / DAY + 1) * DAY);
    if to <= from {
        anyhow::bail!(
            "--to ({}) is not after --from ({}): nothing to rebuild",
            day_name(to),
            day_name(from)
        );
    }
    let days = (to - from) / DAY;
    let run = format!("{}", feedback_runtime::now_ms());
    let started = Instant::now();
    eprintln!(
        "rebuilding the rollups of {} day(s), {} to {} (UTC), database {}",
        days,
        day_name(from),
        day_name(to - DAY),
        ch.database()
    );
    let (mut events, mut corrections, mut kept, mut restored) = (0i64, 0usize, Vec::new(), 0u64);
    for (i, day) in (from..to).step_by(DAY as usize).enumerate() {
        let r = ch
            .rebuild_day(day, &run)
            .await
            .with_context(|| format!("rebuilding {}", day_name(day)))?;
        // The latest comments' table (filled by a view) gets what it missed, too (a day
        // without raw events has nothing to restore).
        let comments = if r.events > 0 {
            ch.restore_comments_day(day).await.with_context(|| {
                format!(
                    "restoring the comments of {} into rating_comments",
                    day_name(day)
                )
            })?
        } else {
            0
        };
        restored += comments;
        events += r.events;
        corrections += r.corrections;
        if r.kept_without_raw {
            kept.push(day_name(day));
        }
        let done = i as u32 + 1;
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!(
            "[{done}/{days}] {}: {} events, {} correction row(s){}{}; {:.1} s elapsed, about {:.0} s left",
            day_name(day),
            r.events,
            r.corrections,
            if comments > 0 {
                format!(", {comments} comment(s) restored")
            } else {
                String::new()
            },
            if r.kept_without_raw {
                " (no raw rows: rollups kept)"
            } else {
                ""
            },
            elapsed,
            elapsed / f64::from(done) * f64::from(days - done)
        );
    }
    println!(
        "rebuilt {days} day(s) from {} events in {:.1} s: {corrections} correction row(s) inserted{}{}",
        events,
        started.elapsed().as_secs_f64(),
        if restored > 0 {
            format!(", {restored} comment(s) restored into rating_comments")
        } else {
            String::new()
        },
        if kept.is_empty() {
            String::new()
        } else {
            format!(
                "; kept without raw rows (expired or erased): {}",
                kept.join(", ")
            )
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_outward() {
        assert_eq!(parse_day("2026-03-01"), Ok(1_772_323_200));
        assert_eq!(parse_day("2026-03-01T10:00:00Z"), Ok(1_772_323_200));
        assert_eq!(parse_end("2026-03-01"), Ok(1_772_323_200));
        assert_eq!(parse_end("2026-03-01T10:00:00+00:00"), Ok(1_772_409_600));
        assert!(parse_day("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(parse_day("1960-01-01").unwrap_err().contains("1970"));
        assert_eq!(month_end("202512"), Some(1_767_225_600)); // 2026-01-01
        assert_eq!(month_end("202602"), Some(1_772_323_200)); // 2026-03-01
        assert_eq!(month_end("all"), None);
    }
}
