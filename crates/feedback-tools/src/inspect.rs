//! `feedback ownership check [--sample]` and `feedback explain`: the ownership files seen
//! from the command line, so a team can check its change in CI and anyone can ask why an
//! event went where it went.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use feedback_attribution::explain::{analyse_sample, explain};
use feedback_attribution::{Ownership, Severity};
use feedback_events::codec::{decode, Decoded};
use feedback_events::json::{self, Limits};
use feedback_events::Event;
use feedback_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use feedback_kafka::rdkafka::error::KafkaError;
use feedback_kafka::rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use feedback_runtime::Common;

/// Limits for events read from files or topics: the collector's shape rules, but any
/// timestamp (samples and explanations may be old).
fn lenient() -> Limits {
    Limits {
        max_future_ms: i64::MAX / 4,
        max_past_ms: i64::MAX / 4,
        ..Limits::default()
    }
}

/// One event in the collector's JSON: a rating when it has `rating_id`, else an interaction.
pub fn event_from_json(v: &Value, index: usize) -> anyhow::Result<Event> {
    let now = feedback_runtime::now_ms();
    let is_rating = v.get("rating_id").is_some();
    let r = if is_rating {
        json::rating(v, index, &lenient(), now).map(Event::Rating)
    } else {
        json::interaction(v, index, &lenient(), now).map(Event::Interaction)
    };
    r.map_err(|errs| {
        let text = errs
            .iter()
            .map(|e| {
                if e.field.is_empty() {
                    e.reason.clone()
                } else {
                    format!("`{}`: {}", e.field, e.reason)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        anyhow::anyhow!(text)
    })
}

/// Events from a file: a JSON array, or one JSON object per line.
fn sample_from_file(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read sample file {}: {e}", path.display()))?;
    let trimmed = text.trim_start();
    let mut out = Vec::new();
    if trimmed.starts_with('[') {
        let v: Vec<Value> = serde_json::from_str(trimmed)
            .map_err(|e| anyhow::anyhow!("{}: not a JSON array of events: {e}", path.display()))?;
        for (i, item) in v.iter().enumerate() {
            out.push(
                event_from_json(item, i)
                    .map_err(|e| anyhow::anyhow!("{} item {i}: {e}", path.display()))?,
            );
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: not JSON: {e}", path.display(), n + 1))?;
            out.push(
                event_from_json(&v, n)
                    .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?,
            );
        }
    }
    Ok(out)
}

/// Up to `max` events from the start of every partition of `topic` (Avro single-object).
fn sample_from_topic(common: &Common, topic: &str, max: usize) -> anyhow::Result<Vec<Event>> {
    let kafka = common.kafka();
    let c: BaseConsumer = kafka
        .read_committed_consumer("feedback-attribution-check")
        .partition_eof()
        .create()
        .map_err(|e| {
            anyhow::anyhow!("cannot create a Kafka consumer for {}: {e}", kafka.brokers)
        })?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| anyhow::anyhow!("cannot read topic {topic} on {}: {e}", kafka.brokers))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(anyhow::anyhow!(
            "topic {topic} does not exist on {}",
            kafka.brokers
        ));
    }
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut pending: std::collections::BTreeSet<i32> = parts.into_iter().collect();
    let mut out = Vec::new();
    let mut undecodable = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() && out.len() < max && Instant::now() < deadline {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => match decode(m.payload().unwrap_or(&[])) {
                Ok(Decoded::Interaction(i)) => out.push(Event::Interaction(i)),
                Ok(Decoded::Rating(r)) => out.push(Event::Rating(r)),
                Ok(Decoded::Attributed(a)) => out.push(a.event),
                Err(_) => undecodable += 1,
            },
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => return Err(anyhow::anyhow!("reading {topic}: {e}")),
            None => {}
        }
    }
    if undecodable > 0 {
        eprintln!("note: skipped {undecodable} undecodable message(s) in {topic}");
    }
    Ok(out)
}

/// `feedback ownership check`: exit 0 when clean, 1 on errors, 2 when it cannot run.
pub fn ownership_check(
    dir: &Path,
    sample: Option<&str>,
    sample_max: usize,
    common: &Common,
) -> ExitCode {
    let files = match Ownership::read_dir(dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let o = Ownership::from_files(&files);
    let mut diagnostics = o.diagnostics.clone();
    let mut report = None;
    if let Some(src) = sample {
        let events = match src.strip_prefix("kafka:") {
            Some(topic) => sample_from_topic(common, topic, sample_max),
            None => sample_from_file(Path::new(src)),
        };
        match events {
            Ok(events) => {
                let r = analyse_sample(&o, &events);
                diagnostics.extend(r.conflicts.iter().cloned());
                report = Some(r);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    for d in &diagnostics {
        println!("{}/{d}", dir.display());
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    if let Some(r) = &report {
        print!("{r}");
    }
    println!(
        "{} files, {} teams, {} claims, version {}: {errors} error(s), {warnings} warning(s)",
        files.len(),
        o.teams.len(),
        o.claims.len(),
        o.version
    );
    if files.is_empty() {
        println!("no ownership files (*.toml) in {}", dir.display());
        return ExitCode::FAILURE;
    }
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `feedback explain`: the decision for one event and every claim considered.
pub fn explain_cmd(dir: &Path, event: &str) -> ExitCode {
    let text = if event == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            eprintln!("error: cannot read the event from stdin: {e}");
            return ExitCode::from(2);
        }
        s
    } else if let Some(path) = event.strip_prefix('@') {
        match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot read {path}: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        event.to_string()
    };
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: the event is not JSON ({e}); pass one interaction or rating object as the collector accepts it, '@file' or '-' for stdin");
            return ExitCode::from(2);
        }
    };
    let ev = match event_from_json(&v, 0) {
        Ok(ev) => ev,
        Err(e) => {
            eprintln!("error: the event is not a valid interaction or rating: {e}");
            return ExitCode::from(2);
        }
    };
    let o = match Ownership::load_dir(dir) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", explain(&o, &ev));
    ExitCode::SUCCESS
}
