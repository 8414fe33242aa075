//! The embeddable producer library: a service emits events without the collector.

use std::time::{Duration, Instant};

use feedback_events::{Channel, Interaction, Metric, Rating};
use feedback_kafka::{FeedbackProducer, KafkaConfig, Topics};

use crate::harness::{brokers, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_embeds_the_producer_and_its_events_are_attributed() {
    let mut env = Env::new("lib");
    env.run(&["topics", "--partitions", "2"]);
    env.spawn(&["attributor"]);
    let producer = FeedbackProducer::new(
        &KafkaConfig {
            brokers: brokers(),
            extra: vec![],
        },
        Topics::with_prefix(&env.prefix),
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let interaction = Interaction {
        interaction_id: "lib-i-1".into(),
        occurred_at: now,
        service: "delivery-tracker".into(),
        channel: Channel::App,
        kind: "delivery".into(),
        customer_ref: "c".into(),
        product: None,
        region: None,
        agent_id: None,
        team: None,
        attributes: Default::default(),
    };
    let rating = Rating {
        rating_id: "lib-r-1".into(),
        occurred_at: now + 1,
        interaction_id: Some("lib-i-1".into()),
        metric: Metric::Ces,
        score: 6,
        comment: None,
        service: "survey".into(),
        channel: Channel::App,
        customer_ref: "c".into(),
        product: None,
        region: None,
        attributes: Default::default(),
    };
    let acks = producer
        .send_interactions(std::slice::from_ref(&interaction))
        .await
        .unwrap();
    let racks = producer
        .send_ratings(std::slice::from_ref(&rating))
        .await
        .unwrap();
    // Same key, same partition count: a rating lands on its interaction's partition.
    assert_eq!(acks[0].partition, racks[0].partition);
    assert_eq!(env.topic_messages(&env.topic("interactions")), 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while crate::harness::read_committed(&env.topic("attributed")).len() < 2 {
        env.assert_alive();
        assert!(
            Instant::now() < deadline,
            "attributed events did not appear"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        crate::harness::read_committed(&env.topic("attributed")).len(),
        2
    );
}
