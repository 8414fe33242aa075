//! How many bytes the join and dedup state holds per live key, measured by the allocator
//! (not estimated), and whether the engine's own estimate (the `state_bytes` metric) is
//! honest. Prints the figure; the bound asserted is a regression guard, not a target.

use std::alloc::System;
use std::sync::Arc;

use feedback_attribution::{Engine, Outcome, Ownership};
use feedback_events::{Channel, Interaction, Metric, Rating, SourceRef};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

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

#[test]
fn state_bytes_per_live_key() {
    let keys: u64 = std::env::var("FEEDBACK_STATE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ownership");
    let files = Ownership::read_dir(&root).unwrap();
    let o = Arc::new(Ownership::from_files(&files));
    let region = Region::new(GLOBAL);
    let mut e = Engine::new(o, 7 * 86_400_000);
    let t0 = 1_790_000_000_000i64;
    let services = ["checkout-api", "delivery-tracker", "mobile-bff", "shop-web"];
    // Half the keys are interactions (36-character ids), half ratings of them.
    for n in 0..keys / 2 {
        let i = Interaction {
            interaction_id: uuid(n, 1),
            occurred_at: t0 + n as i64,
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
            occurred_at: t0 + n as i64 + 1,
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
        assert!(matches!(
            e.on_interaction(i, SourceRef::default(), 0),
            Outcome::Emit(_)
        ));
        assert!(matches!(
            e.on_rating(r, SourceRef::default(), 0),
            Outcome::Emit(_)
        ));
        drop(e.take_changes());
    }
    let s = region.change();
    // Reallocations are already folded into both totals by stats_alloc.
    let net = s.bytes_allocated as i64 - s.bytes_deallocated as i64;
    let live = e.stats().interactions + e.stats().ratings;
    assert_eq!(live as u64, keys / 2 * 2);
    let per_key = net as f64 / live as f64;
    let estimate = e.approx_bytes() as f64 / live as f64;
    println!(
        "state: {live} live keys, {net} heap bytes = {per_key:.1} bytes/key (engine estimate {estimate:.1} bytes/key)"
    );
    assert!(
        (estimate - per_key).abs() / per_key < 0.25,
        "the state_bytes metric ({estimate:.1}/key) is more than 25% off the allocator's count ({per_key:.1}/key)"
    );
    assert!(per_key < 400.0, "{per_key:.1} bytes per key");
}
