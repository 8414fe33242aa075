//! `feedback topics` and `feedback migrate`: create the Kafka topics and the ClickHouse schema.

use feedback_runtime::Common;

/// Options of `feedback topics`.
#[derive(clap::Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Partitions per topic.
    #[arg(long, env = "FEEDBACK_TOPIC_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    /// Replication factor (1 on the local single-broker stack; 3 in production).
    #[arg(long, env = "FEEDBACK_TOPIC_REPLICATION", default_value_t = 1)]
    pub replication: i32,
}

/// Options of `feedback migrate`.
#[derive(clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Do not connect: print, as a JSON array, every statement a fresh database gets on
    /// a server of this version (e.g. 26.9), for servers reached another way (chDB).
    #[arg(
        long,
        env = "FEEDBACK_MIGRATE_PRINT_PLAN",
        value_name = "SERVER_VERSION"
    )]
    pub print_plan: Option<String>,
}

/// Creates the topics (idempotent) and prints, for each, whether it was created.
pub async fn topics(args: TopicsArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let created = feedback_kafka::admin::ensure_topics(
        &common.kafka(),
        &common.topics(),
        args.partitions,
        args.replication,
    )
    .await?;
    for t in common.topics().all() {
        println!(
            "{t}: {}",
            if created.iter().any(|c| c == t) {
                "created"
            } else {
                "exists"
            }
        );
    }
    Ok(())
}

/// Applies the pending migrations, or with `--print-plan` prints a fresh database's plan.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let common = &args.common;
    if let Some(server) = &args.print_plan {
        let plan = feedback_clickhouse::migrations::fresh_plan(
            &common.clickhouse_database,
            feedback_clickhouse::migrations::parse_version(server),
        );
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    let ch = common.clickhouse()?;
    let version = ch.server_version().await?;
    let applied = ch.migrate_with(&|line| eprintln!("{line}")).await?;
    println!(
        "ClickHouse {version}, database {}: {}",
        ch.database(),
        if applied.is_empty() {
            "up to date".to_string()
        } else {
            format!("applied migrations {applied:?}")
        }
    );
    if let Some(advice) = crate::rollups::advice(&ch.rollup_coverage().await?) {
        println!("{advice}");
    }
    Ok(())
}
