//! The drill's traffic: the seeded workload cut into collector requests the way a real
//! producer sends them (retrying with the same ids until it gets an answer that is not a
//! 5xx), requests that must be rejected, and Kafka-level garbage that must become dead
//! letters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use feedback_events::json::{interaction_to_json, rating_to_json};
use feedback_events::{Encoded, Interaction, Rating};
use feedback_kafka::deadletter::Reason;
use feedback_workload::{Generated, Item, Mix, Workload};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// One HTTP request of the workload.
pub struct Request {
    pub path: &'static str,
    pub body: Vec<u8>,
    /// The items it carries (for rejected requests: items never to be seen downstream).
    pub items: Vec<Generated>,
    /// Built to be refused with a 4xx.
    pub must_reject: bool,
}

/// What the collector finally answered.
#[derive(Clone, Debug)]
pub enum Outcome {
    Accepted,
    Rejected(u16),
    /// No 202 or 4xx before the deadline: whether its events are stored is unknown.
    Unresolved(String),
}

fn body(values: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&Value::Array(values)).expect("JSON of generated items")
}

fn request(items: Vec<Generated>) -> Request {
    let (path, values) = match &items[0].item {
        Item::Interaction(_) => (
            "/v1/interactions",
            items
                .iter()
                .map(|g| match &g.item {
                    Item::Interaction(i) => interaction_to_json(i),
                    Item::Rating(_) => unreachable!("requests hold one kind"),
                })
                .collect(),
        ),
        Item::Rating(_) => (
            "/v1/ratings",
            items
                .iter()
                .map(|g| match &g.item {
                    Item::Rating(r) => rating_to_json(r),
                    Item::Interaction(_) => unreachable!("requests hold one kind"),
                })
                .collect(),
        ),
    };
    Request {
        path,
        body: body(values),
        items,
        must_reject: false,
    }
}

/// A batch of otherwise valid items (fresh ids) with one invalid item: the collector must
/// refuse the whole batch, so none of its ids may ever reach ClickHouse.
fn rejected(template: &[Generated], tag: &str, rng: &mut ChaCha8Rng) -> Request {
    let n = rng.random_range(1..=4).min(template.len());
    let mut items: Vec<Generated> = template[..n].to_vec();
    for (j, g) in items.iter_mut().enumerate() {
        match &mut g.item {
            Item::Interaction(i) => i.interaction_id = format!("{tag}-{j}"),
            Item::Rating(r) => {
                r.rating_id = format!("{tag}-{j}");
                r.interaction_id = None;
            }
        }
    }
    let mut req = request(items);
    let mut values: Vec<Value> = serde_json::from_slice(&req.body).expect("our own JSON");
    let bad = rng.random_range(0..values.len());
    let v = &mut values[bad];
    match rng.random_range(0..3) {
        // A required field missing.
        0 => {
            v.as_object_mut()
                .expect("items are objects")
                .remove("customer_ref");
        }
        // An event time a year in the future.
        1 => v["occurred_at"] = Value::from(chrono::Utc::now().timestamp_millis() + 31_536_000_000),
        // A channel nobody defined.
        _ => v["channel"] = Value::from("carrier-pigeon"),
    }
    req.body = body(values);
    req.must_reject = true;
    req
}

/// The seeded workload: `events` generated items (event times spread over the hour before
/// `start_ms`) plus what the generator still held back, in requests of one kind cut from
/// windows of `window` items, with `rejects` refused requests mixed in.
pub fn requests(
    seed: u64,
    name: &str,
    events: usize,
    window: usize,
    rejects: usize,
    start_ms: i64,
    rng: &mut ChaCha8Rng,
) -> Vec<Request> {
    let mut w = Workload::new(seed, name, Mix::default());
    let step = 3_600_000 / events.max(1) as i64;
    let base = start_ms - 3_600_000;
    let mut items: Vec<Generated> = (0..events)
        .map(|i| w.next_item(base + i as i64 * step))
        .collect();
    items.extend(w.drain());
    let mut out = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        let chunk: Vec<Generated> = it.by_ref().take(window.max(1)).collect();
        let (ratings, interactions): (Vec<Generated>, Vec<Generated>) = chunk
            .into_iter()
            .partition(|g| matches!(g.item, Item::Rating(_)));
        // The collector refuses a request naming one id twice: a generated duplicate
        // starts a new request, as a client's retry would.
        out.extend(
            [ratings, interactions]
                .into_iter()
                .flat_map(|b| feedback_workload::split_requests(b, usize::MAX))
                .map(request),
        );
    }
    let total = out.len();
    for k in 0..rejects {
        let at = rng.random_range(0..=out.len());
        let template = &out[rng.random_range(0..total)].items;
        let r = rejected(template, &format!("{name}-rejected-{k}"), rng);
        out.insert(at, r);
    }
    out
}

/// Sends `req` until the collector answers 202 or 4xx, at most until `deadline`; 5xx
/// answers, refused or reset connections and timeouts are retried with the same body.
/// Returns the outcome and how many attempts it took.
pub async fn send(
    client: &reqwest::Client,
    base: &str,
    req: &Request,
    deadline: Instant,
) -> (Outcome, u32) {
    let mut attempts = 0;
    let mut pause = Duration::from_millis(100);
    loop {
        attempts += 1;
        let r = client
            .post(format!("{base}{}", req.path))
            .header("content-type", "application/json")
            .body(req.body.clone())
            .send()
            .await;
        let last = match r {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read the whole answer: a 202 is final only once it arrived in full.
                let text = resp.text().await;
                match (status, text) {
                    (202, Ok(_)) => return (Outcome::Accepted, attempts),
                    (400..=499, Ok(_)) => return (Outcome::Rejected(status), attempts),
                    (s, Ok(t)) => format!("{s}: {}", t.chars().take(200).collect::<String>()),
                    (s, Err(e)) => format!("{s} with an unreadable body: {e}"),
                }
            }
            Err(e) => format!("no answer: {e}"),
        };
        if Instant::now() + pause > deadline {
            return (Outcome::Unresolved(last), attempts);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Kafka-level garbage for the input topics and the dead-letter reason each must get.
pub struct Garbage {
    pub topic_is_ratings: bool,
    pub payload: Vec<u8>,
    pub reason: Reason,
}

fn sample_interaction(id: String) -> Interaction {
    Interaction {
        interaction_id: id,
        occurred_at: 1_700_000_000_000,
        service: "drill-garbage".into(),
        channel: feedback_events::Channel::Web,
        kind: "order".into(),
        customer_ref: "cust-0".into(),
        product: None,
        region: None,
        agent_id: None,
        team: None,
        attributes: BTreeMap::new(),
    }
}

fn sample_rating(id: String) -> Rating {
    Rating {
        rating_id: id,
        occurred_at: 1_700_000_000_000,
        interaction_id: None,
        metric: feedback_events::Metric::Csat,
        score: 3,
        comment: None,
        service: "drill-garbage".into(),
        channel: feedback_events::Channel::Web,
        customer_ref: "cust-0".into(),
        product: None,
        region: None,
        attributes: BTreeMap::new(),
    }
}

/// The `k`-th garbage message (ids under `name`): five kinds in turn, on both input topics.
pub fn garbage(name: &str, k: usize) -> Garbage {
    let topic_is_ratings = (k / 5) % 2 == 1;
    let id = format!("{name}-garbage-{k}");
    let (payload, reason) = match k % 5 {
        0 => (
            format!("drill garbage {k}: these bytes are not Avro").into_bytes(),
            Reason::BadMarker,
        ),
        1 => (b"\xC3\x01".to_vec(), Reason::TooShort),
        2 => {
            let mut b = sample_interaction(id).encode();
            b[4] ^= 0x5a;
            (b, Reason::UnknownFingerprint)
        }
        3 => {
            // Header, then the first string field cut in its middle.
            let mut b = sample_interaction(id).encode();
            b.truncate(10 + 4);
            (b, Reason::Truncated)
        }
        _ => {
            // A valid record of the other input topic's type.
            let b = if topic_is_ratings {
                sample_interaction(id).encode()
            } else {
                sample_rating(id).encode()
            };
            (b, Reason::WrongSchema)
        }
    };
    Garbage {
        topic_is_ratings,
        payload,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn garbage_gets_the_reason_the_drill_expects() {
        for k in 0..20 {
            let g = garbage("d", k);
            let got = match feedback_events::decode(&g.payload) {
                Err(e) => Reason::from(&e),
                Ok(feedback_events::codec::Decoded::Interaction(_)) if g.topic_is_ratings => {
                    Reason::WrongSchema
                }
                Ok(feedback_events::codec::Decoded::Rating(_)) if !g.topic_is_ratings => {
                    Reason::WrongSchema
                }
                Ok(other) => panic!("garbage {k} decodes as {other:?}"),
            };
            assert_eq!(got, g.reason, "garbage {k}");
        }
    }

    #[test]
    fn rejected_requests_carry_fresh_ids_and_one_invalid_item() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let reqs = requests(3, "d", 2000, 100, 30, 1_800_000_000_000, &mut rng);
        let bad: Vec<&Request> = reqs.iter().filter(|r| r.must_reject).collect();
        assert_eq!(bad.len(), 30);
        let mut good_ids = std::collections::HashSet::new();
        for r in reqs.iter().filter(|r| !r.must_reject) {
            for g in &r.items {
                good_ids.insert(g.item.id().to_string());
            }
        }
        assert!(good_ids.len() > 2000);
        for r in bad {
            assert!(r.items.iter().all(|g| !good_ids.contains(g.item.id())));
            let v: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
            let now = 1_800_000_000_000;
            let invalid = v
                .iter()
                .enumerate()
                .filter(|(i, x)| {
                    let limits = feedback_events::json::Limits::default();
                    if r.path == "/v1/ratings" {
                        feedback_events::json::rating(x, *i, &limits, now).is_err()
                    } else {
                        feedback_events::json::interaction(x, *i, &limits, now).is_err()
                    }
                })
                .count();
            assert_eq!(invalid, 1, "{}", String::from_utf8_lossy(&r.body));
        }
    }

    #[test]
    fn every_valid_request_passes_the_collectors_validation() {
        use feedback_events::json::{parse_batch, BatchKind, Limits};
        let start = 1_800_000_000_000;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        // Small windows and many events: the workload's duplicates fall inside windows.
        let reqs = requests(5, "d", 5000, 200, 0, start, &mut rng);
        for r in reqs.iter().filter(|r| !r.must_reject) {
            let kind = if r.path == "/v1/ratings" {
                BatchKind::Ratings
            } else {
                BatchKind::Interactions
            };
            let got = parse_batch(&r.body, kind, &Limits::default(), 1000, start, None);
            assert!(got.is_ok(), "{:?}", got.err());
        }
    }
}
