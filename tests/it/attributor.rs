//! The attributor's promises, against the real broker: exactly one output per distinct
//! input across SIGKILLs and a lost instance; the join in time (before, long after, never);
//! deduplication across restarts; ownership changes picked up without a restart.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use feedback_events::codec::{decode, Decoded};
use feedback_events::{Attribution, Channel, Interaction, Metric, Rating};
use feedback_kafka::{FeedbackProducer, KafkaConfig, Topics};
use feedback_workload::{Generated, Item, Mix, Workload};
use rand::{Rng, SeedableRng};
use rdkafka::Message;

use crate::harness::{brokers, read_committed, repo_root, unique, Env};

/// What the attributed topic holds, per event id: (team, method, orphan, version) of
/// every output (a correct run has exactly one per id).
type Outputs = HashMap<String, Vec<(String, Attribution, bool, String)>>;

fn outputs(env: &Env) -> Outputs {
    let mut out: Outputs = HashMap::new();
    for m in read_committed(&env.topic("attributed")) {
        let Ok(Decoded::Attributed(a)) = decode(m.payload().unwrap_or(&[])) else {
            panic!(
                "undecodable message on the attributed topic at offset {}",
                m.offset()
            );
        };
        out.entry(a.event.id().to_string()).or_default().push((
            a.team,
            a.attribution,
            a.orphan,
            a.ownership_version,
        ));
    }
    out
}

fn producer(env: &Env) -> FeedbackProducer {
    FeedbackProducer::new(
        &KafkaConfig {
            brokers: brokers(),
            extra: Vec::new(),
        },
        Topics::with_prefix(&env.prefix),
    )
    .unwrap()
}

async fn send(p: &FeedbackProducer, items: &[Generated]) {
    let (mut is, mut rs) = (Vec::new(), Vec::new());
    for g in items {
        match &g.item {
            Item::Interaction(i) => is.push(i.clone()),
            Item::Rating(r) => rs.push(r.clone()),
        }
    }
    // Interactions of a chunk first, then its ratings: early ratings still occur, because
    // the workload emits many ratings chunks before their interaction.
    p.send_interactions(&is).await.unwrap();
    p.send_ratings(&rs).await.unwrap();
}

/// Ground truth from the workload alone: id → team, and which ids are ratings that name
/// an interaction (their method must be `interaction`).
fn truth(items: &[Generated]) -> (BTreeMap<String, &'static str>, Vec<String>) {
    let mut team = BTreeMap::new();
    let mut joined = Vec::new();
    for g in items {
        team.insert(g.item.id().to_string(), g.team);
        if let Item::Rating(r) = &g.item {
            if r.interaction_id.is_some() {
                joined.push(r.rating_id.clone());
            }
        }
    }
    (team, joined)
}

/// Waits until the attributed topic holds `want` distinct ids, then a little longer so
/// that extra copies, if any were coming, arrive too.
async fn settle(env: &mut Env, want: usize) -> Outputs {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let o = outputs(env);
        if o.len() >= want {
            tokio::time::sleep(Duration::from_secs(3)).await;
            return outputs(env);
        }
        env.assert_alive();
        assert!(
            Instant::now() < deadline,
            "after 240 s only {} of {want} ids were attributed",
            o.len()
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

fn assert_exactly_once(out: &Outputs, team: &BTreeMap<String, &'static str>, joined: &[String]) {
    let extra: Vec<&String> = out.keys().filter(|k| !team.contains_key(*k)).collect();
    assert!(extra.is_empty(), "outputs for ids never sent: {extra:?}");
    let mut wrong = Vec::new();
    for (id, t) in team {
        match out.get(id).map(Vec::as_slice) {
            Some([one]) if one.0 == *t => {}
            other => wrong.push(format!("{id}: want one output for team {t}, got {other:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} ids wrong, e.g. {:?}",
        wrong.len(),
        team.len(),
        &wrong[..wrong.len().min(5)]
    );
    for id in joined {
        assert_eq!(out[id][0].1, Attribution::Interaction, "rating {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_while_events_flow_leave_exactly_one_output_per_input() {
    let mut env = Env::new("kill20");
    env.prepare();
    let now = chrono::Utc::now().timestamp_millis();
    let items = Workload::new(7, &env.database, Mix::default()).generate(20_000, now);
    let (team, joined) = truth(&items);
    let dup = items.iter().filter(|g| g.duplicate).count();
    assert!(dup > 100, "the workload resends ids ({dup})");

    // The workload flows in 40 chunks over the whole kill sequence.
    let p = producer(&env);
    let chunks: Vec<Vec<Generated>> = items.chunks(500).map(|c| c.to_vec()).collect();
    let feeder = tokio::spawn(async move {
        for c in chunks {
            send(&p, &c).await;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    });

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20);
    for k in 0..20 {
        let i = env.spawn_with(&["attributor"], &[]);
        // Moments from "still restoring" to "well into a batch".
        let ms = rng.random_range(200..2500);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        env.assert_alive();
        env.kill(i);
        eprintln!("kill {}: SIGKILL after {ms} ms", k + 1);
    }
    feeder.await.unwrap();
    env.spawn_with(&["attributor"], &[]);
    let out = settle(&mut env, team.len()).await;
    assert_exactly_once(&out, &team, &joined);
    let readable: usize = out.values().map(Vec::len).sum();
    eprintln!(
        "{} distinct ids ({} sends) attributed exactly once across 20 SIGKILLs; the attributed topic's offsets end at {} for {readable} readable records (the rest: transaction markers and the aborted writes of killed instances)",
        team.len(),
        items.len(),
        env.topic_messages(&env.topic("attributed")),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_work_and_one_dying_mid_stream_loses_and_repeats_nothing() {
    let mut env = Env::new("two");
    env.prepare();
    let now = chrono::Utc::now().timestamp_millis();
    let items = Workload::new(11, &env.database, Mix::default()).generate(12_000, now);
    let (team, joined) = truth(&items);
    let a = env.spawn_with(&["attributor"], &[("FEEDBACK_ATTRIBUTOR_INSTANCE", "a")]);
    let b = env.spawn_with(&["attributor"], &[("FEEDBACK_ATTRIBUTOR_INSTANCE", "b")]);
    let p = producer(&env);
    let chunks: Vec<Vec<Generated>> = items.chunks(400).map(|c| c.to_vec()).collect();
    let n = chunks.len();
    for (k, c) in chunks.into_iter().enumerate() {
        send(&p, &c).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if k == n / 2 {
            env.kill(b);
            eprintln!("instance b SIGKILLed after {} of {n} chunks", k + 1);
        }
    }
    let out = settle(&mut env, team.len()).await;
    env.assert_alive();
    let _ = a;
    assert_exactly_once(&out, &team, &joined);
}

fn interaction(id: &str, t: i64, service: &str, kind: &str) -> Interaction {
    Interaction {
        interaction_id: id.into(),
        occurred_at: t,
        service: service.into(),
        channel: Channel::Web,
        kind: kind.into(),
        customer_ref: "c".into(),
        product: None,
        region: None,
        agent_id: None,
        team: None,
        attributes: Default::default(),
    }
}

fn rating(id: &str, t: i64, iid: Option<&str>, service: &str) -> Rating {
    Rating {
        rating_id: id.into(),
        occurred_at: t,
        interaction_id: iid.map(Into::into),
        metric: Metric::Csat,
        score: 4,
        comment: None,
        service: service.into(),
        channel: Channel::App,
        customer_ref: "c".into(),
        product: None,
        region: None,
        attributes: Default::default(),
    }
}

async fn wait_for(env: &mut Env, ids: &[&str]) -> Outputs {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = outputs(env);
        if ids.iter().all(|i| o.contains_key(*i)) {
            return o;
        }
        env.assert_alive();
        assert!(
            Instant::now() < deadline,
            "waiting for {ids:?}; have {:?}",
            o.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_before_long_after_and_never_after_their_interaction_and_duplicates_across_a_restart(
) {
    // Horizon one hour of event time; events spread over hours of event time.
    let mut env = Env::new("join");
    env.prepare();
    let horizon = [("FEEDBACK_ATTRIBUTOR_HORIZON_SECS", "3600")];
    let first = env.spawn_with(&["attributor"], &horizon);
    let p = producer(&env);
    let t0 = 1_790_000_000_000i64; // 2026-09-21, any fixed event time works
    let min = 60_000;
    // delivery-tracker belongs to team delivery, mobile-bff to mobile-app (deploy/ownership).
    p.send_ratings(&[rating("r-before", t0, Some("i-late"), "mobile-bff")])
        .await
        .unwrap();
    p.send_interactions(&[interaction("i-main", t0, "delivery-tracker", "delivery")])
        .await
        .unwrap();
    p.send_interactions(&[interaction(
        "i-late",
        t0 + 5 * min,
        "delivery-tracker",
        "delivery",
    )])
    .await
    .unwrap();
    p.send_ratings(&[
        rating("r-long-after", t0 + 50 * min, Some("i-main"), "mobile-bff"),
        rating("r-never", t0 + 10 * min, Some("i-missing"), "mobile-bff"),
    ])
    .await
    .unwrap();
    let o = wait_for(&mut env, &["i-main", "i-late", "r-before", "r-long-after"]).await;
    assert!(
        !o.contains_key("r-never"),
        "r-never waits for its interaction"
    );

    // Restart (clean state would forget r-never and the ids seen): duplicates arrive later,
    // "minutes apart" in event time and after a restart.
    env.kill(first);
    env.spawn_with(&["attributor"], &horizon);
    p.send_interactions(&[interaction("i-main", t0, "delivery-tracker", "delivery")])
        .await
        .unwrap();
    p.send_ratings(&[rating(
        "r-long-after",
        t0 + 50 * min,
        Some("i-main"),
        "mobile-bff",
    )])
    .await
    .unwrap();
    // Event time passes the horizon for r-never (t0 + 10 min + 1 h < t0 + 75 min).
    p.send_interactions(&[interaction("i-clock", t0 + 75 * min, "nobody-svc", "visit")])
        .await
        .unwrap();
    // The missing interaction finally comes, too late: the orphan is not re-emitted.
    p.send_interactions(&[interaction(
        "i-missing",
        t0 + 76 * min,
        "delivery-tracker",
        "delivery",
    )])
    .await
    .unwrap();
    let o = wait_for(&mut env, &["r-never", "i-clock", "i-missing"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let o2 = outputs(&env);
    assert_eq!(o.len(), o2.len());
    let got: BTreeMap<&str, (usize, &str, Attribution, bool)> = o2
        .iter()
        .map(|(k, v)| (k.as_str(), (v.len(), v[0].0.as_str(), v[0].1, v[0].2)))
        .collect();
    let want: BTreeMap<&str, (usize, &str, Attribution, bool)> = [
        ("i-main", (1, "delivery", Attribution::Claim, false)),
        ("i-late", (1, "delivery", Attribution::Claim, false)),
        ("r-before", (1, "delivery", Attribution::Interaction, false)),
        (
            "r-long-after",
            (1, "delivery", Attribution::Interaction, false),
        ),
        ("r-never", (1, "mobile-app", Attribution::Claim, true)),
        ("i-clock", (1, "unowned", Attribution::Unowned, false)),
        ("i-missing", (1, "delivery", Attribution::Claim, false)),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ownership_change_applies_to_later_events_without_a_restart() {
    let mut env = Env::new("reload");
    env.prepare();
    let dir = std::env::temp_dir().join(unique("own"));
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(repo_root().join("deploy/ownership")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let version = |env: &Env| -> String {
        let out = env.run(&[
            "ownership",
            "check",
            "--ownership-dir",
            dir.to_str().unwrap(),
        ]);
        let v = out.split("version ").nth(1).unwrap();
        v.split(':').take(2).collect::<Vec<_>>().join(":")
    };
    let v1 = version(&env);
    env.spawn_with(
        &["attributor"],
        &[("FEEDBACK_OWNERSHIP_DIR", dir.to_str().unwrap())],
    );
    let p = producer(&env);
    let now = chrono::Utc::now().timestamp_millis();
    p.send_interactions(&[interaction("before", now, "delivery-tracker", "delivery")])
        .await
        .unwrap();
    let o = wait_for(&mut env, &["before"]).await;
    assert_eq!(o["before"][0].0, "delivery");
    assert_eq!(o["before"][0].3, v1);

    // Team stores takes over delivery-tracker with a higher priority.
    let stores = std::fs::read_to_string(dir.join("stores.toml")).unwrap();
    std::fs::write(
        dir.join("stores.toml"),
        format!("{stores}\n[[claim]]\nservice = \"delivery-tracker\"\npriority = 50\n"),
    )
    .unwrap();
    let v2 = version(&env);
    assert_ne!(v1, v2);
    // Events flow all along; those after the change carry the new version and team.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("after-{n}");
        p.send_interactions(&[interaction(&id, now + n, "delivery-tracker", "delivery")])
            .await
            .unwrap();
        let o = wait_for(&mut env, &[&id]).await;
        let (team, _, _, v) = &o[&id][0];
        if v == &v2 {
            assert_eq!(team, "stores");
            break;
        }
        assert_eq!((team.as_str(), v.as_str()), ("delivery", v1.as_str()));
        assert!(
            Instant::now() < deadline,
            "the change was not picked up in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And it stays in force.
    p.send_interactions(&[interaction(
        "last",
        now + 1000,
        "delivery-tracker",
        "delivery",
    )])
    .await
    .unwrap();
    let o = wait_for(&mut env, &["last"]).await;
    assert_eq!(
        (o["last"][0].0.as_str(), o["last"][0].3.as_str()),
        ("stores", v2.as_str())
    );
    let _ = std::fs::remove_dir_all(&dir);
}
