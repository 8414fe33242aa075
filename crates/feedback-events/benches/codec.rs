//! Our hand-written Avro single-object codec against apache-avro's generic `Value` path
//! (`feedback_events::reference`), on the same records: the load generator's workload.
//!
//!   cargo bench -p feedback-events --bench codec
//!
//! Prints criterion's figures per group and, at the end, the ratios (apache-avro time ÷ ours).

use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use feedback_events::{decode, reference, Encoded};
use feedback_workload::{Item, Mix, Workload};

fn records() -> Vec<Item> {
    Workload::new(1, "bench", Mix::default())
        .generate(1000, 1_795_000_000_000)
        .into_iter()
        .map(|g| g.item)
        .collect()
}

fn ours_encode(items: &[Item]) -> usize {
    let mut buf = Vec::with_capacity(512);
    let mut n = 0;
    for it in items {
        buf.clear();
        match it {
            Item::Interaction(i) => i.encode_into(&mut buf),
            Item::Rating(r) => r.encode_into(&mut buf),
        }
        n += buf.len();
    }
    n
}

fn avro_encode(items: &[Item]) -> usize {
    items
        .iter()
        .map(|it| match it {
            Item::Interaction(i) => reference::encode_interaction(i).expect("encode").len(),
            Item::Rating(r) => reference::encode_rating(r).expect("encode").len(),
        })
        .sum()
}

fn encoded(items: &[Item]) -> Vec<Vec<u8>> {
    items
        .iter()
        .map(|it| match it {
            Item::Interaction(i) => i.encode(),
            Item::Rating(r) => r.encode(),
        })
        .collect()
}

fn ours_decode(msgs: &[Vec<u8>]) -> usize {
    msgs.iter()
        .map(|m| decode(m).map(|_| 1).expect("decode"))
        .sum()
}

fn avro_decode(msgs: &[Vec<u8>]) -> usize {
    msgs.iter()
        .map(|m| reference::decode_value(m).map(|_| 1).expect("decode"))
        .sum()
}

fn codec(c: &mut Criterion) {
    let items = records();
    let msgs = encoded(&items);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(items.len() as u64));
    g.bench_function("ours", |b| {
        b.iter(|| ours_encode(std::hint::black_box(&items)))
    });
    g.bench_function("apache-avro Value", |b| {
        b.iter(|| avro_encode(std::hint::black_box(&items)))
    });
    g.finish();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function("ours", |b| {
        b.iter(|| ours_decode(std::hint::black_box(&msgs)))
    });
    g.bench_function("apache-avro Value", |b| {
        b.iter(|| avro_decode(std::hint::black_box(&msgs)))
    });
    g.finish();
}

/// Mean time of `f` over enough rounds to take about `budget`.
fn mean(budget: Duration, mut f: impl FnMut() -> usize) -> Duration {
    let mut rounds = 0u32;
    let start = Instant::now();
    while start.elapsed() < budget || rounds < 3 {
        std::hint::black_box(f());
        rounds += 1;
    }
    start.elapsed() / rounds
}

/// The ratios the target is about (criterion's own report has the absolute figures).
fn ratios() {
    let items = records();
    let msgs = encoded(&items);
    let b = Duration::from_secs(1);
    let enc = mean(b, || avro_encode(&items)).as_secs_f64()
        / mean(b, || ours_encode(&items)).as_secs_f64();
    let dec =
        mean(b, || avro_decode(&msgs)).as_secs_f64() / mean(b, || ours_decode(&msgs)).as_secs_f64();
    println!(
        "codec ratio on {} workload records (apache-avro Value time ÷ ours): encode {enc:.1}×, decode {dec:.1}× (target ≥ 10×: {})",
        items.len(),
        if enc >= 10.0 && dec >= 10.0 { "met" } else { "not met" }
    );
}

criterion_group!(benches, codec);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
