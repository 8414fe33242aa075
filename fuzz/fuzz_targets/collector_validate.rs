//! The collector's request validation (`feedback_events::json::parse_batch`) on arbitrary
//! bytes: never panics; every rejection has a 4xx status we document and a non-empty
//! message, a 422 lists at least one problem (each with a reason) and at most
//! MAX_REPORTED_ERRORS; whatever is accepted survives JSON and Avro round trips unchanged.
#![no_main]

use feedback_events::codec::Decoded;
use feedback_events::json::{self, Batch, BatchKind, Limits};
use feedback_events::{decode, Encoded};
use libfuzzer_sys::fuzz_target;

/// 2026-11-18T08:53:20Z; the seeds' timestamps lie just before it.
const NOW_MS: i64 = 1_795_000_000_000;

fuzz_target!(|data: &[u8]| {
    // First byte: endpoint and batch limit; the rest is the body.
    let Some((&ctl, body)) = data.split_first() else {
        return;
    };
    let kind = if ctl & 1 == 0 {
        BatchKind::Ratings
    } else {
        BatchKind::Interactions
    };
    let max_items = 1 + (ctl >> 1) as usize % 8;
    // Top bit: the request came with an API key of service "checkout-api".
    let service = (ctl & 0x80 != 0).then_some("checkout-api");
    let limits = Limits::default();
    match json::parse_batch(body, kind, &limits, max_items, NOW_MS, service) {
        Err(r) => {
            assert!(matches!(r.status, 400 | 413 | 422 | 403), "status {}", r.status);
            assert!(r.status != 403 || service.is_some(), "403 without an API key");
            assert!(!r.error.is_empty());
            if r.status == 422 {
                assert!(!r.errors.is_empty());
                assert!(r.errors.len() <= json::MAX_REPORTED_ERRORS);
                assert!(r.items >= 1 && r.items <= max_items);
                for e in &r.errors {
                    assert!(!e.reason.is_empty());
                    assert!(e.index < r.items);
                }
            } else {
                assert!(r.errors.is_empty());
            }
            // The answer serializes.
            let _ = serde_json::to_vec(&r.body()).unwrap();
        }
        Ok(batch) => {
            assert!(!batch.is_empty() && batch.len() <= max_items);
            let ids = batch.ids();
            let mut unique = ids.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), ids.len(), "duplicate ids accepted");
            if let Some(svc) = service {
                let bound = match &batch {
                    Batch::Interactions(v) => v.iter().all(|i| i.service == svc),
                    Batch::Ratings(v) => v.iter().all(|r| r.service == svc),
                };
                assert!(bound, "an event of another service was accepted with a key");
            }
            match batch {
                Batch::Interactions(v) => {
                    for (n, i) in v.iter().enumerate() {
                        let j = json::interaction_to_json(i);
                        assert_eq!(json::interaction(&j, n, &limits, NOW_MS).as_ref(), Ok(i));
                        assert_eq!(decode(&i.encode()), Ok(Decoded::Interaction(i.clone())));
                    }
                }
                Batch::Ratings(v) => {
                    for (n, r) in v.iter().enumerate() {
                        let j = json::rating_to_json(r);
                        assert_eq!(json::rating(&j, n, &limits, NOW_MS).as_ref(), Ok(r));
                        assert_eq!(decode(&r.encode()), Ok(Decoded::Rating(r.clone())));
                    }
                }
            }
        }
    }
});
