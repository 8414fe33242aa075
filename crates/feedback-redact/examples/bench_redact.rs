//! Throughput of `redact` on typical comments: `cargo run --release -p feedback-redact --example bench_redact`.

use std::time::Instant;

fn main() {
    let comments = [
        "The delivery was two days late and nobody called me back.",
        "Call me on 06-12345678 or mail jan.jansen@example.nl about order 123456789.",
        "Refund to NL91 ABNA 0417 1643 00 please, I paid with 4111 1111 1111 1111 on 2024-03-15.",
        "Great service, 9/10, the courier was friendly and quick. Would recommend to friends and family.",
    ];
    let n = 200_000;
    let mut bytes = 0usize;
    let mut found = 0u32;
    let start = Instant::now();
    for i in 0..n {
        let c = comments[i % comments.len()];
        bytes += c.len();
        found += feedback_redact::redact(c).1.total();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{n} comments ({:.1} MB) in {secs:.2}s: {:.0} comments/s, {:.2} µs/comment, {found} items redacted",
        bytes as f64 / 1e6,
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}
