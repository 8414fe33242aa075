//! `feedback watch`: live per-team CSAT, NPS and CES in the terminal, from the metric view.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use feedback_clickhouse::queries::watch;
use feedback_clickhouse::MetricRow;
use feedback_events::Metric;

use feedback_runtime::Common;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Refresh period in milliseconds.
    #[arg(long, env = "FEEDBACK_WATCH_INTERVAL_MS", default_value_t = 1000)]
    pub interval_ms: u64,
    /// Stop after this many seconds (0: until Ctrl-C).
    #[arg(long, env = "FEEDBACK_WATCH_DURATION_SECS", default_value_t = 0)]
    pub duration_secs: u64,
    /// Window of the numbers: total, last_1h, day, hour or minute (latest bucket).
    #[arg(long, env = "FEEDBACK_WATCH_GRAIN", default_value = "total")]
    pub grain: String,
}

fn cell(rows: &BTreeMap<Metric, &MetricRow>, metric: Metric, unit: &str) -> String {
    match rows.get(&metric) {
        Some(r) if r.responses > 0 => format!("{:>7.1}{unit} ({:>6})", r.value, r.responses),
        _ => format!("{:>9} {:>7}", "-", ""),
    }
}

/// Renders the table shown by `watch`.
pub fn render(rows: &[MetricRow], counts: (u64, u64), rate: Option<f64>) -> String {
    let mut by_team: BTreeMap<&str, BTreeMap<Metric, &MetricRow>> = BTreeMap::new();
    for r in rows {
        by_team
            .entry(r.team.as_str())
            .or_default()
            .insert(r.metric, r);
    }
    let mut s = String::new();
    s.push_str(&format!(
        "{:<16} {:>18} {:>18} {:>18}\n",
        "team", "CSAT % (n)", "NPS (n)", "CES (n)"
    ));
    s.push_str(&format!("{}\n", "-".repeat(73)));
    for (team, m) in &by_team {
        s.push_str(&format!(
            "{:<16} {:>18} {:>18} {:>18}\n",
            team,
            cell(m, Metric::Csat, "%"),
            cell(m, Metric::Nps, " "),
            cell(m, Metric::Ces, " ")
        ));
    }
    s.push_str(&format!(
        "\nClickHouse holds {} interactions and {} ratings",
        counts.0, counts.1
    ));
    if let Some(r) = rate {
        s.push_str(&format!(" (landing {r:.0} events/s)"));
    }
    s.push('\n');
    s
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let ch = args.common.clickhouse()?;
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut last: Option<(Instant, u64)> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(args.interval_ms.max(100)));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {}
        }
        let rows = watch::metrics(&ch, &args.grain).await?;
        let c = watch::counts(&ch).await?;
        let counts = (c.interactions, c.ratings);
        let total = counts.0 + counts.1;
        let now = Instant::now();
        let rate = last.map(|(t, n)| {
            (total.saturating_sub(n)) as f64 / now.duration_since(t).as_secs_f64().max(1e-3)
        });
        last = Some((now, total));
        let table = render(&rows, counts, rate);
        let mut out = std::io::stdout().lock();
        if tty {
            write!(out, "\x1b[2J\x1b[H")?;
        }
        writeln!(
            out,
            "feedback watch · {} · grain {} · {}s\n",
            chrono::Utc::now().format("%H:%M:%S"),
            args.grain,
            started.elapsed().as_secs()
        )?;
        write!(out, "{table}")?;
        out.flush()?;
        if args.duration_secs > 0 && started.elapsed() >= Duration::from_secs(args.duration_secs) {
            break;
        }
    }
    Ok(())
}
