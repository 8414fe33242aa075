//! The benchmark's results: the table printed and written as markdown, the JSON, the SVG
//! chart.

use std::fmt::Write as _;

use serde::Serialize;

use super::procs::ProcCost;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Stable identifier (JSON consumers, the test).
    pub id: &'static str,
    pub group: &'static str,
    pub name: String,
    /// Items handled (events, messages or rows; see `unit`).
    pub count: u64,
    pub unit: &'static str,
    pub seconds: f64,
    /// Items per second, for throughput rows.
    pub rate: Option<f64>,
    pub mb_per_sec: Option<f64>,
    /// Other figure (latency in ms, bytes per key), with its unit.
    pub value: Option<f64>,
    pub value_unit: Option<&'static str>,
    /// CPU seconds and peak memory of every process taking part.
    pub processes: Vec<ProcCost>,
    /// 1-minute load average at the end of the step.
    pub load1: f64,
    pub note: String,
}

/// A ratio between two rows, with its target if the issue sets one.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub id: &'static str,
    pub name: String,
    pub value: f64,
    /// "≥ 0.9", "≤ 1000 ms"...
    pub target: Option<String>,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub load_at_start: String,
    pub load_at_end: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub started_at: String,
    pub quick: bool,
    pub events: usize,
    pub distinct_events: usize,
    pub mean_message_bytes: f64,
    pub machine: Machine,
    pub rows: Vec<Row>,
    pub ratios: Vec<Ratio>,
    pub total_seconds: f64,
}

pub fn machine(load_at_start: String) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(f64::NAN);
    Machine {
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        load_at_start,
        load_at_end: loadavg(),
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn num(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v >= 100.0 {
        let s = format!("{:.0}", v);
        // Thousands separators (thin space keeps markdown tables readable).
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(' ');
            }
            out.push(c);
        }
        out
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), num)
}

fn procs(p: &[ProcCost]) -> String {
    if p.is_empty() {
        return "–".into();
    }
    p.iter()
        .map(|c| {
            let mut s = format!("{} {} s", c.name, opt(c.cpu_seconds));
            if let Some(m) = c.peak_rss_mb {
                let _ = write!(s, " / {} MiB", num(m));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Report {
    /// The markdown tables (measurements, then ratios and targets).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "Run `{}` at {} ({}): {} events ({} distinct), mean message {:.0} bytes; {} × {}, {:.1} GiB, Linux {}; load average {} at start, {} at end; {:.0} s in all.\n",
            self.run_id,
            self.started_at,
            if self.quick { "quick" } else { "full" },
            self.events,
            self.distinct_events,
            self.mean_message_bytes,
            m.cpus,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            m.load_at_start,
            m.load_at_end,
            self.total_seconds
        );
        s.push_str("| measurement | count | seconds | per second | MB/s | other | CPU s / peak memory per process | load1 | how |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---|---:|---|\n");
        for r in &self.rows {
            let other = match (r.value, r.value_unit) {
                (Some(v), Some(u)) => format!("{} {u}", num(v)),
                _ => "–".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} {} | {} | {} | {} | {} | {} | {:.2} | {} |",
                r.name,
                r.count,
                r.unit,
                num(r.seconds),
                opt(r.rate),
                opt(r.mb_per_sec),
                other,
                procs(&r.processes),
                r.load1,
                r.note.replace('|', "\\|")
            );
        }
        s.push_str("\n| ratio | measured | target | met |\n|---|---:|---|---|\n");
        for r in &self.ratios {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                r.name,
                num(r.value),
                r.target.as_deref().unwrap_or("–"),
                match r.met {
                    Some(true) => "met",
                    Some(false) => "**not met**",
                    None => "–",
                }
            );
        }
        s
    }

    /// A horizontal bar chart of every throughput row (events, messages or rows per second),
    /// raw limits and pipeline stages in different colours, plus the ratio list.
    pub fn svg(&self) -> String {
        let bars: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| {
                r.rate.is_some_and(f64::is_finite)
                    && (r.group == "raw" || r.group == "stage" || r.group == "e2e")
            })
            .collect();
        let max = bars.iter().filter_map(|r| r.rate).fold(1.0f64, f64::max);
        let (left, width, bar_h, gap) = (330.0, 520.0, 18.0, 8.0);
        let top = 50.0;
        let chart_h = bars.len() as f64 * (bar_h + gap);
        let ratios_h = 20.0 * self.ratios.len() as f64 + 30.0;
        let h = top + chart_h + ratios_h + 20.0;
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="{h:.0}" viewBox="0 0 1000 {h:.0}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="1000" height="{h:.0}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="10" y="20" font-size="15" font-weight="bold">feedback bench {}: throughput per second (load average {} → {})</text>"#,
            esc(&self.run_id),
            esc(&self.machine.load_at_start),
            esc(&self.machine.load_at_end)
        );
        let _ = writeln!(
            s,
            r##"<text x="10" y="38" fill="#555">grey: raw Kafka / ClickHouse limits; blue: pipeline stages; green: end to end</text>"##
        );
        for (i, r) in bars.iter().enumerate() {
            let y = top + i as f64 * (bar_h + gap);
            let v = r.rate.unwrap_or(0.0);
            let w = (v / max * width).max(1.0);
            let colour = match r.group {
                "raw" => "#9e9e9e",
                "stage" => "#1f77b4",
                "e2e" => "#2ca02c",
                _ => "#bcbd22",
            };
            let _ = writeln!(
                s,
                r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text>"#,
                left - 8.0,
                y + 13.0,
                esc(&r.name)
            );
            let _ = writeln!(
                s,
                r#"<rect x="{left:.0}" y="{y:.0}" width="{w:.1}" height="{bar_h:.0}" fill="{colour}"/>"#
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.0}" y="{:.0}">{} {}/s</text>"#,
                left + w + 6.0,
                y + 13.0,
                num(v).replace(' ', ","),
                r.unit
            );
        }
        let mut y = top + chart_h + 20.0;
        let _ = writeln!(
            s,
            r#"<text x="10" y="{y:.0}" font-weight="bold">Ratios and targets</text>"#
        );
        for r in &self.ratios {
            y += 20.0;
            let colour = match r.met {
                Some(true) => "#2ca02c",
                Some(false) => "#d62728",
                None => "#333",
            };
            let _ = writeln!(
                s,
                r#"<text x="20" y="{y:.0}" fill="{colour}">{}: {} (target {}{})</text>"#,
                esc(&r.name),
                num(r.value).replace(' ', ","),
                esc(r.target.as_deref().unwrap_or("none")),
                match r.met {
                    Some(true) => ", met",
                    Some(false) => ", NOT met",
                    None => "",
                }
            );
        }
        s.push_str("</svg>\n");
        s
    }
}
