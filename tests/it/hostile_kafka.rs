//! The hostile-input corpus at the Kafka level: bad bytes produced straight into the input
//! topics (for the attributor) and into the attributed topic (for the sink). Each becomes
//! exactly one dead letter in ClickHouse with its EXACT reason and error text and its
//! source coordinates; every valid event after it on the same partition lands (no stall);
//! no process exits.
//!
//! Expected texts are written out here from the Avro spec and our schemas, not taken from
//! the code under test.

use std::time::{Duration, Instant};

use feedback_events::{AttributedEvent, Channel, Encoded, Event, Interaction, Metric, Rating};
use rand::{RngCore, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::harness::{brokers, Env};

/// Header bytes (marker + fingerprint) of our schemas, as fastavro prints the fingerprints.
const INTERACTION_FP: &str = "aa3dceef2b9b91df";
const RATING_FP: &str = "b7200084ba9927c9";
const ATTRIBUTED_FP: &str = "a23cf8837edfed33";
/// CRC-64-AVRO of `{"name":"other.v1.Foo","type":"record","fields":[{"name":"x","type":"long"}]}`
/// (computed with fastavro): valid Avro of a schema that is not ours.
const FOREIGN_FP: &str = "f4c71c277e9b71df";

fn known() -> String {
    format!("one of {INTERACTION_FP} (interaction), {RATING_FP} (rating), {ATTRIBUTED_FP} (attributed) from schemas/")
}

fn header(fp_hex: &str) -> Vec<u8> {
    let mut h = vec![0xC3, 0x01];
    h.extend((0..8).map(|i| u8::from_str_radix(&fp_hex[2 * i..2 * i + 2], 16).unwrap()));
    h
}

/// Avro `long`: zig-zag, then base-128 varint (the spec's encoding, written independently).
fn long(v: i64) -> Vec<u8> {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        if n < 0x80 {
            out.push(n as u8);
            return out;
        }
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
}

fn lossy_len(b: &[u8]) -> usize {
    String::from_utf8_lossy(b).len()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn interaction(id: &str) -> Interaction {
    Interaction {
        interaction_id: id.into(),
        occurred_at: now_ms(),
        service: "shop-web".into(),
        channel: Channel::Web,
        kind: "web_session".into(),
        customer_ref: "c".into(),
        product: None,
        region: None,
        agent_id: None,
        team: None,
        attributes: Default::default(),
    }
}

fn rating(id: &str) -> Rating {
    Rating {
        rating_id: id.into(),
        occurred_at: now_ms(),
        interaction_id: None,
        metric: Metric::Csat,
        score: 4,
        comment: None,
        service: "survey".into(),
        channel: Channel::Email,
        customer_ref: "c".into(),
        product: None,
        region: None,
        attributes: Default::default(),
    }
}

const RULES: &str = "event breaks the collector's field rules: ";
const RULES_END: &str = "; producers must send only what the collector would accept";

struct Bad {
    name: &'static str,
    /// `None`: a Kafka message without a value (tombstone).
    payload: Option<Vec<u8>>,
    reason: &'static str,
    error: String,
    /// Length of the dead letter's `payload` column: the message (at most its first
    /// 64 KiB), as UTF-8 with invalid bytes replaced (U+FFFD, 3 bytes each).
    kept: usize,
}

fn bad(
    name: &'static str,
    payload: Vec<u8>,
    reason: &'static str,
    error: impl Into<String>,
) -> Bad {
    Bad {
        name,
        kept: lossy_len(&payload),
        payload: Some(payload),
        reason,
        error: error.into(),
    }
}

fn attributor_corpus(interactions_topic: &str, ratings_topic: &str) -> (Vec<Bad>, Vec<Bad>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let mut random = vec![0u8; 256];
    rng.fill_bytes(&mut random);
    assert_ne!(random[..2], [0xC3, 0x01]);
    let mut truncated = interaction("cut").encode();
    truncated.truncate(truncated.len() - 3); // ... product null, region null | agent_id, team, attributes
    let mut flipped = interaction("fp").encode();
    flipped[3] ^= 0x5a;
    let flipped_hex: String = flipped[2..10].iter().map(|b| format!("{b:02x}")).collect();
    let mut trailing = interaction("trail").encode();
    trailing.extend_from_slice(&[0, 0]);
    let mut as_rating = interaction("x").encode();
    as_rating[2..10].copy_from_slice(&header(RATING_FP)[2..]);
    let attributed = AttributedEvent {
        event: Event::Interaction(interaction("attr")),
        team: "t".into(),
        attribution: feedback_events::Attribution::Unowned,
        claim: None,
        ownership_version: "v".into(),
        orphan: false,
        interaction_kind: None,
        source: feedback_events::SourceRef {
            topic: "x".into(),
            partition: 0,
            offset: 0,
        },
        attributed_at: 0,
    }
    .encode();
    let mut empty_id = interaction("");
    empty_id.service = "shop\u{7}web".into();
    let mut far = interaction("far");
    far.occurred_at = i64::MAX;
    let mut big = interaction("big");
    big.kind = "k".repeat(200_000);
    let big = big.encode();
    let mut huge = interaction("huge");
    huge.kind = "k".repeat(1_040_000);
    let huge = huge.encode();
    let huge_kept = huge[..64 * 1024].to_vec();
    let oversized = |n: usize| {
        format!("message is {n} bytes; at most 65536 are accepted (--max-message-bytes), far above any event the collector accepts")
    };
    let wrong = |t: &str| format!("message on {t} holds another record type");
    let interactions = vec![
        bad(
            "random bytes",
            random.clone(),
            "bad_marker",
            format!(
                "message does not start with the Avro single-object marker C3 01 (found {:02X} {:02X})",
                random[0], random[1]
            ),
        ),
        bad(
            "text",
            b"hello, not avro".to_vec(),
            "bad_marker",
            "message does not start with the Avro single-object marker C3 01 (found 68 65)",
        ),
        bad(
            "wrong marker, right fingerprint",
            cat(&[&[0xC3, 0x02], &interaction("m").encode()[2..]]),
            "bad_marker",
            "message does not start with the Avro single-object marker C3 01 (found C3 02)",
        ),
        bad(
            "empty message",
            Vec::new(),
            "too_short",
            "message is 0 bytes, shorter than the 10-byte single-object header",
        ),
        Bad {
            name: "tombstone (no value)",
            payload: None,
            reason: "too_short",
            error: "message is 0 bytes, shorter than the 10-byte single-object header".into(),
            kept: 0,
        },
        bad(
            "header cut short",
            header(INTERACTION_FP)[..9].to_vec(),
            "too_short",
            "message is 9 bytes, shorter than the 10-byte single-object header",
        ),
        bad(
            "header only",
            header(INTERACTION_FP),
            "truncated",
            "datum ends early while reading field `interaction_id`",
        ),
        bad(
            "truncated Avro",
            truncated,
            "truncated",
            "datum ends early while reading field `agent_id`",
        ),
        bad(
            "unknown fingerprint",
            flipped,
            "unknown_fingerprint",
            format!("unknown writer schema fingerprint {flipped_hex}; expected {}", known()),
        ),
        bad(
            "valid Avro of a foreign schema",
            cat(&[&header(FOREIGN_FP), &long(42)]),
            "unknown_fingerprint",
            format!("unknown writer schema fingerprint {FOREIGN_FP}; expected {}", known()),
        ),
        bad(
            "a rating on the interactions topic",
            rating("r-wrong").encode(),
            "wrong_schema",
            wrong(interactions_topic),
        ),
        bad(
            "an attributed event on the interactions topic",
            attributed,
            "wrong_schema",
            wrong(interactions_topic),
        ),
        bad(
            "trailing bytes",
            trailing,
            "trailing_bytes",
            "2 bytes left over after the datum",
        ),
        bad(
            "varint longer than 10 bytes",
            cat(&[&header(INTERACTION_FP), &[0xFF; 10]]),
            "varint_overflow",
            "variable-length integer of field `interaction_id` is longer than 10 bytes",
        ),
        bad(
            "negative string length",
            cat(&[&header(INTERACTION_FP), &long(-5)]),
            "bad_length",
            "field `interaction_id` has invalid length -5",
        ),
        bad(
            "string length beyond the message",
            cat(&[&header(INTERACTION_FP), &long(1 << 40)]),
            "bad_length",
            format!("field `interaction_id` has invalid length {}", 1i64 << 40),
        ),
        bad(
            "invalid UTF-8 in a string",
            cat(&[&header(INTERACTION_FP), &long(2), &[0xFF, 0xFE]]),
            "invalid_utf8",
            "field `interaction_id` is not valid UTF-8",
        ),
        bad(
            "enum index out of range",
            cat(&[
                &header(INTERACTION_FP),
                &long(1),
                b"x",
                &long(0),
                &long(1),
                b"s",
                &long(99),
            ]),
            "bad_index",
            "field `channel` has out-of-range index 99",
        ),
        bad(
            "empty id and a control character",
            empty_id.encode(),
            "invalid_event",
            format!("{RULES}`interaction_id` must not be empty; `service` contains control characters{RULES_END}"),
        ),
        bad(
            "timestamp beyond year 9999",
            far.encode(),
            "invalid_event",
            format!("{RULES}`occurred_at` 9223372036854775807 ms since 1970 lies outside the years 0000 to 9999{RULES_END}"),
        ),
        Bad {
            name: "oversized message (200 KB)",
            error: oversized(big.len()),
            kept: lossy_len(&big[..64 * 1024]),
            payload: Some(big),
            reason: "oversized",
        },
        Bad {
            name: "oversized message (1 MB)",
            error: oversized(huge.len()),
            payload: Some(huge),
            reason: "oversized",
            kept: lossy_len(&huge_kept),
        },
    ];
    let mut score_99 = rating("r-99");
    score_99.score = 99;
    let mut long_comment = rating("r-long");
    long_comment.comment = Some("c".repeat(5000));
    let ratings = vec![
        bad(
            "an interaction on the ratings topic",
            interaction("i-wrong").encode(),
            "wrong_schema",
            wrong(ratings_topic),
        ),
        bad(
            "interaction datum under the rating fingerprint",
            as_rating,
            "bad_index",
            // rating_id "x", occurred_at, then interaction_id's union index reads the
            // interaction's service length 8.
            "field `interaction_id` has out-of-range index 8",
        ),
        bad(
            "score beyond Avro int",
            cat(&[
                &header(RATING_FP),
                &long(1),
                b"r",
                &long(0),
                &long(0),
                &long(0),
                &long(1 << 32),
            ]),
            "bad_value",
            "field `score` has value 4294967296 that does not fit its type",
        ),
        bad(
            "score out of range for its metric",
            score_99.encode(),
            "invalid_event",
            format!("{RULES}`score` 99 is out of range for csat: expected 1 to 5{RULES_END}"),
        ),
        bad(
            "comment longer than the collector allows",
            long_comment.encode(),
            "invalid_event",
            format!("{RULES}`comment` is 5000 bytes long; at most 4000 allowed{RULES_END}"),
        ),
        bad(
            "random bytes on the ratings topic",
            random[100..].to_vec(),
            "bad_marker",
            format!(
                "message does not start with the Avro single-object marker C3 01 (found {:02X} {:02X})",
                random[100], random[101]
            ),
        ),
    ];
    (interactions, ratings)
}

/// With FEEDBACK_CORPUS_TABLE=<file>, appends the cases (as verified) as Markdown rows:
/// case, input (topic, size, first bytes), exact dead letter.
fn corpus_table(topic: &str, cases: &[Bad]) {
    let Ok(path) = std::env::var("FEEDBACK_CORPUS_TABLE") else {
        return;
    };
    let mut out = String::new();
    for c in cases {
        let input = match &c.payload {
            None => "no value (tombstone)".to_string(),
            Some(p) => {
                let head: String = p.iter().take(12).map(|b| format!("{b:02x}")).collect();
                format!(
                    "{} bytes `{head}{}`",
                    p.len(),
                    if p.len() > 12 { "…" } else { "" }
                )
            }
        };
        out.push_str(&format!(
            "| {} | {topic}: {input} | `{}`: {} |\n",
            c.name,
            c.reason,
            c.error.replace('|', "\\|")
        ));
    }
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(out.as_bytes())
        .unwrap();
}

#[derive(Debug, clickhouse::Row, Deserialize, PartialEq)]
struct Dead {
    component: String,
    reason: String,
    error: String,
    source_topic: String,
    source_offset: i64,
    payload_bytes: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Id {
    id: String,
}

fn raw_producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        // Room for the 1 MB message, up to the broker's default limit (librdkafka's own default cap is 1,000,000 bytes).
        .set("message.max.bytes", "1048576")
        .create()
        .unwrap()
}

async fn send(p: &FutureProducer, topic: &str, payload: Option<&[u8]>) {
    let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key("k");
    if let Some(b) = payload {
        rec = rec.payload(b);
    }
    p.send(rec, Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_on_the_input_topics_are_dead_lettered_with_their_exact_reason() {
    let mut env = Env::new("hostilekafka");
    env.run(&["topics", "--partitions", "1"]);
    env.run(&["migrate"]);
    env.spawn(&["attributor"]);
    env.spawn(&["sink", "--flush-ms", "200"]);
    let p = raw_producer();
    let (itopic, rtopic) = (env.topic("interactions"), env.topic("ratings"));
    let (icases, rcases) = attributor_corpus(&itopic, &rtopic);
    assert!(icases.len() + rcases.len() >= 28);
    // Each bad message is followed by a valid event on the same partition.
    let mut want_dead = Vec::new();
    let mut want_ids = Vec::new();
    for (topic, cases) in [(&itopic, &icases), (&rtopic, &rcases)] {
        let mut offset = 0i64;
        for (n, c) in cases.iter().enumerate() {
            send(&p, topic, c.payload.as_deref()).await;
            want_dead.push(Dead {
                component: "attributor".into(),
                reason: c.reason.into(),
                error: c.error.clone(),
                source_topic: topic.to_string(),
                source_offset: offset,
                payload_bytes: c.kept as u64,
            });
            let id = format!("ok-{n}");
            let valid = if topic == &itopic {
                interaction(&id).encode()
            } else {
                rating(&id).encode()
            };
            send(&p, topic, Some(&valid)).await;
            want_ids.push(format!(
                "{}{id}",
                if topic == &itopic { "i/" } else { "r/" }
            ));
            offset += 2;
        }
    }
    want_dead.sort_by(|a, b| {
        (&a.source_topic, a.source_offset).cmp(&(&b.source_topic, b.source_offset))
    });
    want_ids.sort();
    let ch = env.clickhouse();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ids: Vec<Id> = ch
            .fetch("SELECT id FROM (SELECT concat('i/', interaction_id) AS id FROM {db}.interactions UNION ALL SELECT concat('r/', rating_id) AS id FROM {db}.ratings) ORDER BY id")
            .await
            .unwrap();
        let dead: Vec<Dead> = ch
            .fetch("SELECT component, reason, error, source_topic, source_offset, length(payload) AS payload_bytes FROM {db}.dead_letters ORDER BY source_topic, source_offset")
            .await
            .unwrap();
        if ids.len() >= want_ids.len() && dead.len() >= want_dead.len() {
            let ids: Vec<String> = ids.into_iter().map(|i| i.id).collect();
            assert_eq!(ids, want_ids, "every valid event after a bad one, once");
            let mut diffs = Vec::new();
            for (n, (got, want)) in dead.iter().zip(&want_dead).enumerate() {
                if got != want {
                    let name = if want.source_topic == itopic {
                        icases[n].name
                    } else {
                        rcases[n - icases.len()].name
                    };
                    diffs.push(format!("{name}:\n  got  {got:?}\n  want {want:?}"));
                }
            }
            assert!(diffs.is_empty(), "{}", diffs.join("\n"));
            corpus_table("interactions (attributor)", &icases);
            corpus_table("ratings (attributor)", &rcases);
            assert_eq!(dead.len(), want_dead.len());
            break;
        }
        env.assert_alive();
        assert!(
            Instant::now() < deadline,
            "after 90s: {} of {} valid rows, {} of {} dead letters",
            ids.len(),
            want_ids.len(),
            dead.len(),
            want_dead.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    env.assert_alive();
    // The dead-letter topic holds the same, each once (read_committed: the attributor
    // writes dead letters in its transactions).
    let on_topic = crate::harness::read_committed(&env.topic("deadletter"));
    assert_eq!(on_topic.len(), want_dead.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_on_the_attributed_topic_are_dead_lettered_by_the_sink() {
    let mut env = Env::new("hostilesink");
    env.run(&["topics", "--partitions", "1"]);
    env.run(&["migrate"]);
    env.spawn(&["sink", "--flush-ms", "200"]);
    let p = raw_producer();
    let topic = env.topic("attributed");
    let ok = |id: &str| AttributedEvent {
        event: Event::Rating(rating(id)),
        team: "payments".into(),
        attribution: feedback_events::Attribution::Explicit,
        claim: None,
        ownership_version: "v1".into(),
        orphan: false,
        interaction_kind: None,
        source: feedback_events::SourceRef {
            topic: "in".into(),
            partition: 0,
            offset: 1,
        },
        attributed_at: now_ms(),
    };
    let mut truncated = ok("cut").encode();
    truncated.truncate(truncated.len() - 1); // attributed_at is the last field
    let mut flipped = ok("fp").encode();
    flipped[9] ^= 0x01;
    let flipped_hex: String = flipped[2..10].iter().map(|b| format!("{b:02x}")).collect();
    let mut trailing = ok("trail").encode();
    trailing.push(7);
    let cases = [
        bad(
            "text",
            b"{\"rating_id\": \"r\"}".to_vec(),
            "bad_marker",
            "message does not start with the Avro single-object marker C3 01 (found 7B 22)",
        ),
        bad(
            "empty message",
            Vec::new(),
            "too_short",
            "message is 0 bytes, shorter than the 10-byte single-object header",
        ),
        bad(
            "unknown fingerprint",
            flipped,
            "unknown_fingerprint",
            format!(
                "unknown writer schema fingerprint {flipped_hex}; expected {}",
                known()
            ),
        ),
        bad(
            "truncated attributed event",
            truncated,
            "truncated",
            "datum ends early while reading field `attributed_at`",
        ),
        bad(
            "trailing bytes",
            trailing,
            "trailing_bytes",
            "1 bytes left over after the datum",
        ),
        bad(
            "a plain rating (another schema)",
            rating("plain").encode(),
            "wrong_schema",
            "not an attributed event",
        ),
        // Above librdkafka's 1,000,000-byte default: the row lands whole, the sink's
        // publish on the dead-letter topic carries its first 64 KiB.
        bad(
            "oversized bytes (1 MB)",
            vec![b'x'; 1_040_000],
            "bad_marker",
            "message does not start with the Avro single-object marker C3 01 (found 78 78)",
        ),
    ];
    let mut want = Vec::new();
    let mut offset = 0i64;
    for (n, c) in cases.iter().enumerate() {
        send(&p, &topic, c.payload.as_deref()).await;
        want.push(Dead {
            component: "sink".into(),
            reason: c.reason.into(),
            error: c.error.clone(),
            source_topic: topic.clone(),
            source_offset: offset,
            payload_bytes: c.kept as u64,
        });
        send(&p, &topic, Some(&ok(&format!("ok-{n}")).encode())).await;
        offset += 2;
    }
    let ch = env.clickhouse();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids: Vec<Id> = ch
            .fetch("SELECT rating_id AS id FROM {db}.ratings ORDER BY id")
            .await
            .unwrap();
        let dead: Vec<Dead> = ch
            .fetch("SELECT component, reason, error, source_topic, source_offset, length(payload) AS payload_bytes FROM {db}.dead_letters ORDER BY source_offset")
            .await
            .unwrap();
        if ids.len() >= cases.len() && dead.len() >= cases.len() {
            let want_ids: Vec<String> = (0..cases.len()).map(|n| format!("ok-{n}")).collect();
            assert_eq!(ids.into_iter().map(|i| i.id).collect::<Vec<_>>(), want_ids);
            for (c, (got, want)) in cases.iter().zip(dead.iter().zip(&want)) {
                assert_eq!(got, want, "{}", c.name);
            }
            assert_eq!(dead.len(), cases.len());
            corpus_table("attributed (sink)", &cases);
            break;
        }
        env.assert_alive();
        assert!(
            Instant::now() < deadline,
            "after 60s: {} valid rows, {} dead letters",
            ids.len(),
            dead.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Each is also published on the dead-letter topic, the 1 MB one cut to 64 KiB.
    let dlq = env.topic("deadletter");
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.topic_messages(&dlq) < cases.len() as i64 {
        assert!(Instant::now() < deadline, "dead letters missing on {dlq}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    use rdkafka::Message;
    let published = crate::harness::read_committed(&dlq);
    let sizes: Vec<usize> = published
        .iter()
        .map(|m| m.payload().map_or(0, |p| p.len()))
        .collect();
    let want: Vec<usize> = cases.iter().map(|c| c.kept.min(64 * 1024)).collect();
    assert_eq!(sizes, want);
    env.assert_alive();
}
