//! The attribution engine in-process: state bytes per live key, and throughput with many
//! live keys against an empty engine. Measured without Kafka, so the figures are the
//! engine's own (the attributor's Kafka side is measured by the attributor stage).

use std::sync::Arc;
use std::time::Instant;

use feedback_attribution::{Engine, Ownership};
use feedback_events::{Channel, Interaction, Metric, Rating, SourceRef};
use feedback_workload::{Item, Mix, Workload};
use indicatif::ProgressBar;

use super::procs::self_rss_bytes;

const T0: i64 = 1_790_000_000_000;

fn uuid(n: u64, salt: u64) -> String {
    let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        x >> 32,
        (x >> 16) & 0xffff,
        n & 0xfff,
        (n >> 12) & 0xfff,
        x & 0xffff_ffff_ffff
    )
}

/// An engine holding `keys` live keys: half interactions with 36-character ids, half
/// ratings of them (as `crates/feedback-attribution/tests/state_size.rs` builds them).
fn loaded(ownership: &Arc<Ownership>, keys: u64, bar: &ProgressBar) -> Engine {
    let mut e = Engine::new(ownership.clone(), 7 * 86_400_000);
    let services = ["checkout-api", "delivery-tracker", "mobile-bff", "shop-web"];
    for n in 0..keys / 2 {
        let i = Interaction {
            interaction_id: uuid(n, 1),
            occurred_at: T0 + (n % 1000) as i64,
            service: services[(n % 4) as usize].into(),
            channel: Channel::Web,
            kind: "order".into(),
            customer_ref: uuid(n, 2),
            product: None,
            region: None,
            agent_id: None,
            team: None,
            attributes: Default::default(),
        };
        let r = Rating {
            rating_id: uuid(n, 3),
            occurred_at: T0 + (n % 1000) as i64 + 1,
            interaction_id: Some(i.interaction_id.clone()),
            metric: Metric::Csat,
            score: 4,
            comment: None,
            service: "survey".into(),
            channel: Channel::Email,
            customer_ref: i.customer_ref.clone(),
            product: None,
            region: None,
            attributes: Default::default(),
        };
        e.on_interaction(i, SourceRef::default(), 0);
        e.on_rating(r, SourceRef::default(), 0);
        if n.is_multiple_of(8192) {
            drop(e.take_changes());
            bar.set_position(n * 2);
        }
    }
    drop(e.take_changes());
    e
}

/// Events per second of `engine` handling `items` (outcomes and changelog records made and
/// dropped, as the attributor makes them).
fn throughput(engine: &mut Engine, items: &[Item]) -> f64 {
    let src = SourceRef {
        topic: "feedback.interactions.v1".into(),
        partition: 0,
        offset: 0,
    };
    let start = Instant::now();
    for (n, it) in items.iter().enumerate() {
        let o = match it {
            Item::Interaction(i) => engine.on_interaction(i.clone(), src.clone(), 0),
            Item::Rating(r) => engine.on_rating(r.clone(), src.clone(), 0),
        };
        std::hint::black_box(o);
        if n.is_multiple_of(1000) {
            drop(engine.take_changes());
        }
    }
    drop(engine.take_changes());
    items.len() as f64 / start.elapsed().as_secs_f64()
}

pub struct StateFigures {
    pub keys: u64,
    /// The engine's own estimate (the `feedback_attributor_state_bytes` metric), per key.
    pub estimate_bytes_per_key: f64,
    /// Growth of this process's resident memory while the state was built, per key.
    pub rss_bytes_per_key: Option<f64>,
    pub build_seconds: f64,
    /// Events/s through this engine (the workload's events, new keys).
    pub loaded_rate: f64,
}

/// For each key count: build, measure, run the workload through it, drop. Also returns the
/// rate through an empty engine.
pub fn measure(
    ownership: &Arc<Ownership>,
    key_counts: &[u64],
    events: usize,
    bar: &ProgressBar,
) -> (f64, Vec<StateFigures>) {
    // Three disjoint slices of new events (own id prefixes): each rate is the best of
    // three passes, so a neighbour's burst on a shared machine does not decide the ratio.
    let slices: Vec<Vec<Item>> = (0..3)
        .map(|k| {
            Workload::new(7 + k, &format!("state{k}"), Mix::default())
                .generate(events / 3, T0 + 2000)
                .into_iter()
                .map(|g| g.item)
                .collect()
        })
        .collect();
    let best = |e: &mut Engine| {
        slices
            .iter()
            .map(|items| throughput(e, items))
            .fold(0.0f64, f64::max)
    };
    // A first pass warms caches and the allocator.
    best(&mut Engine::new(ownership.clone(), 7 * 86_400_000));
    let empty_rate = slices
        .iter()
        .map(|items| throughput(&mut Engine::new(ownership.clone(), 7 * 86_400_000), items))
        .fold(0.0f64, f64::max);
    let mut out = Vec::new();
    for &keys in key_counts {
        bar.set_length(keys);
        bar.set_position(0);
        let before = self_rss_bytes();
        let start = Instant::now();
        let mut e = loaded(ownership, keys, bar);
        let build_seconds = start.elapsed().as_secs_f64();
        let after = self_rss_bytes();
        let live = (e.stats().interactions + e.stats().ratings) as f64;
        let estimate = e.approx_bytes() as f64 / live;
        let rss = match (before, after) {
            (Some(b), Some(a)) if a > b => Some((a - b) as f64 / live),
            _ => None,
        };
        let loaded_rate = best(&mut e);
        out.push(StateFigures {
            keys,
            estimate_bytes_per_key: estimate,
            rss_bytes_per_key: rss,
            build_seconds,
            loaded_rate,
        });
        drop(e);
    }
    (empty_rate, out)
}
