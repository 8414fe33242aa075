//! A deterministic synthetic workload for the demo, the load generator and the tests.
//!
//! Every generated item carries its *ground truth*: the team it belongs to by
//! construction. The profiles below were written from the demo organisation's ownership
//! files by hand, not computed by the attribution engine, so tests that compare the
//! pipeline's result with this truth check the engine independently.
//!
//! Shape of the traffic: several services, channels and products; 60% of interactions get
//! a rating after a delay, 10% of those ratings are sent *before* their interaction, 5% are
//! sent twice, 40% carry a comment; 8% of ratings are about no interaction (relationship NPS,
//! app-store reviews). No I/O, no clock: the caller passes the time.

pub mod oracle;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use feedback_events::{Channel, Interaction, Metric, Rating, UNOWNED};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One kind of interaction and the team that owns it by construction.
struct Profile {
    service: &'static str,
    channel: Channel,
    kind: &'static str,
    product: Option<&'static str>,
    /// `team` field set by the emitting service (explicit attribution).
    explicit: Option<&'static str>,
    team: &'static str,
    /// Relative frequency.
    weight: u32,
    /// 0 = customers hate it, 1 = customers love it.
    quality: f64,
}

// A positional row constructor keeps the profile table below readable as a table.
#[allow(clippy::too_many_arguments)]
const fn p(
    service: &'static str,
    channel: Channel,
    kind: &'static str,
    product: Option<&'static str>,
    explicit: Option<&'static str>,
    team: &'static str,
    weight: u32,
    quality: f64,
) -> Profile {
    Profile {
        service,
        channel,
        kind,
        product,
        explicit,
        team,
        weight,
        quality,
    }
}

/// Interaction profiles; `team` follows deploy/ownership/*.toml.
const PROFILES: &[Profile] = &[
    p(
        "checkout-api",
        Channel::Web,
        "order",
        Some("payments-card"),
        None,
        "payments",
        14,
        0.75,
    ),
    p(
        "checkout-api",
        Channel::App,
        "order",
        Some("payments-wallet"),
        None,
        "payments",
        8,
        0.70,
    ),
    p(
        "delivery-tracker",
        Channel::App,
        "delivery",
        Some("groceries"),
        None,
        "delivery",
        10,
        0.45,
    ),
    p(
        "delivery-tracker",
        Channel::Web,
        "delivery",
        Some("furniture"),
        None,
        "delivery",
        5,
        0.35,
    ),
    p(
        "courier-partner",
        Channel::Phone,
        "delivery",
        Some("furniture"),
        None,
        "delivery",
        3,
        0.30,
    ),
    p(
        "store-pos",
        Channel::Store,
        "visit",
        Some("groceries"),
        None,
        "stores",
        9,
        0.80,
    ),
    p(
        "helpdesk",
        Channel::Phone,
        "call",
        Some("account"),
        None,
        "customer-care",
        8,
        0.55,
    ),
    p(
        "helpdesk",
        Channel::Chat,
        "chat",
        Some("account"),
        None,
        "customer-care",
        7,
        0.60,
    ),
    p(
        "helpdesk",
        Channel::Email,
        "support_ticket",
        Some("payments-card"),
        None,
        "payments",
        4,
        0.40,
    ),
    p(
        "helpdesk",
        Channel::Email,
        "support_ticket",
        Some("account"),
        None,
        "customer-care",
        5,
        0.50,
    ),
    p(
        "helpdesk",
        Channel::Phone,
        "call",
        Some("invoice"),
        Some("billing"),
        "billing",
        3,
        0.45,
    ),
    p(
        "mobile-bff",
        Channel::App,
        "app_session",
        Some("groceries"),
        None,
        "mobile-app",
        6,
        0.65,
    ),
    p(
        "shop-web",
        Channel::Web,
        "web_session",
        Some("furniture"),
        None,
        "web-shop",
        6,
        0.70,
    ),
    p(
        "field-ops",
        Channel::Field,
        "visit",
        Some("installation"),
        None,
        "field-service",
        4,
        0.60,
    ),
    p(
        "billing-invoices",
        Channel::Email,
        "invoice",
        Some("invoice"),
        None,
        "billing",
        4,
        0.50,
    ),
    p(
        "legacy-crm",
        Channel::Social,
        "mention",
        None,
        None,
        UNOWNED,
        2,
        0.30,
    ),
];

const REGIONS: &[&str] = &["eu-west", "eu-north", "us-east", "apac"];
const GOOD: &[&str] = &[
    "Quick and friendly, thank you!",
    "Exactly what I needed.",
    "Smooth from start to finish.",
    "The agent really listened.",
    "Arrived earlier than promised.",
];
const BAD: &[&str] = &[
    "Waited far too long for an answer.",
    "I had to explain my problem three times.",
    "The parcel arrived damaged and nobody called back.",
    "Payment failed twice before it worked.",
    "The app logged me out in the middle of checkout.",
    "Nobody told me the delivery was late.",
];

/// Where and what a rating is asked.
struct Survey<'a> {
    service: &'a str,
    channel: Channel,
    metric: Metric,
    quality: f64,
    product: Option<&'a str>,
}

/// A generated item and its ground truth.
#[derive(Debug, Clone)]
pub struct Generated {
    pub item: Item,
    /// The team this event belongs to by construction.
    pub team: &'static str,
    /// A repeat of an item already generated (same id): must be counted once.
    pub duplicate: bool,
}

#[derive(Debug, Clone)]
pub enum Item {
    Interaction(Interaction),
    Rating(Rating),
}

impl Item {
    pub fn id(&self) -> &str {
        match self {
            Item::Interaction(i) => &i.interaction_id,
            Item::Rating(r) => &r.rating_id,
        }
    }
}

/// Cuts `items` (in order) into collector requests of at most `max` items, starting a new
/// request where an id would repeat: the collector refuses a batch naming one id twice, so a
/// generated duplicate travels in a later request, as a client's retry would.
pub fn split_requests(
    items: impl IntoIterator<Item = Generated>,
    max: usize,
) -> Vec<Vec<Generated>> {
    let mut out = Vec::new();
    let mut current: Vec<Generated> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for g in items {
        if current.len() >= max.max(1) || ids.contains(g.item.id()) {
            out.push(std::mem::take(&mut current));
            ids.clear();
        }
        ids.insert(g.item.id().to_string());
        current.push(g);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Share of interactions that get a rating, of ratings sent before their interaction,
/// of ratings sent twice, of ratings with a comment, of ratings about no interaction.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub rated: f64,
    pub early: f64,
    pub duplicate: f64,
    pub comment: f64,
    pub standalone: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            rated: 0.6,
            early: 0.1,
            duplicate: 0.05,
            comment: 0.4,
            standalone: 0.08,
        }
    }
}

/// The generator. Call [`Workload::next_item`] for each item; [`Workload::drain`] at the end
/// returns what is still delayed so that every early rating gets its interaction.
pub struct Workload {
    rng: ChaCha8Rng,
    prefix: String,
    mix: Mix,
    step: u64,
    journeys: u64,
    total_weight: u32,
    /// Delayed items by due step.
    delayed: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slots: Vec<Option<Generated>>,
    free: Vec<usize>,
}

impl Workload {
    /// `prefix` makes ids unique across runs (e.g. the seed and a run id).
    pub fn new(seed: u64, prefix: &str, mix: Mix) -> Self {
        Workload {
            rng: ChaCha8Rng::seed_from_u64(seed),
            prefix: prefix.to_string(),
            mix,
            step: 0,
            journeys: 0,
            total_weight: PROFILES.iter().map(|p| p.weight).sum(),
            delayed: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    fn delay(&mut self, g: Generated, steps: u64) {
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[slot] = Some(g);
        let seq = self.step * 4 + self.delayed.len() as u64;
        self.delayed.push(Reverse((self.step + steps, seq, slot)));
    }

    fn pick_profile(&mut self) -> &'static Profile {
        let mut x = self.rng.random_range(0..self.total_weight);
        for p in PROFILES {
            if x < p.weight {
                return p;
            }
            x -= p.weight;
        }
        &PROFILES[0]
    }

    fn score(&mut self, metric: Metric, quality: f64) -> i32 {
        let (lo, hi) = metric.score_range();
        // People answer "would you recommend" more generously than "were you satisfied":
        // without the lift a mediocre team's NPS sits near -70, far from real surveys.
        let lift = if metric == Metric::Nps { 0.2 } else { 0.0 };
        let x = (quality + lift + (self.rng.random::<f64>() - 0.5) * 0.9).clamp(0.0, 1.0);
        lo + (x * (hi - lo) as f64).round() as i32
    }

    fn rating(
        &mut self,
        interaction_id: Option<String>,
        survey: Survey<'_>,
        now_ms: i64,
    ) -> Rating {
        let Survey {
            service,
            channel,
            metric,
            quality,
            product,
        } = survey;
        let n = self.rng.random::<u64>();
        let score = self.score(metric, quality);
        let comment = if self.rng.random_bool(self.mix.comment) {
            let (lo, hi) = metric.score_range();
            let good = (score - lo) * 2 >= hi - lo;
            let list = if good { GOOD } else { BAD };
            Some(list[self.rng.random_range(0..list.len())].to_string())
        } else {
            None
        };
        Rating {
            rating_id: format!("{}-r-{:x}", self.prefix, n),
            occurred_at: now_ms,
            interaction_id,
            metric,
            score,
            comment,
            service: service.to_string(),
            channel,
            customer_ref: format!("cust-{}", self.rng.random_range(0..50_000)),
            product: product.map(str::to_string),
            region: Some(REGIONS[self.rng.random_range(0..REGIONS.len())].to_string()),
            attributes: BTreeMap::new(),
        }
    }

    fn journey(&mut self, now_ms: i64) -> Generated {
        self.journeys += 1;
        if self.rng.random_bool(self.mix.standalone * self.mix.rated) {
            // A rating about no interaction.
            let (service, channel, metric, team, q) = if self.rng.random_bool(0.6) {
                (
                    "nps-relationship",
                    Channel::Email,
                    Metric::Nps,
                    "loyalty",
                    0.55,
                )
            } else {
                (
                    "app-store-reviews",
                    Channel::App,
                    Metric::Csat,
                    UNOWNED,
                    0.4,
                )
            };
            let survey = Survey {
                service,
                channel,
                metric,
                quality: q,
                product: None,
            };
            let r = self.rating(None, survey, now_ms);
            return self.maybe_duplicate(Generated {
                item: Item::Rating(r),
                team,
                duplicate: false,
            });
        }
        let p = self.pick_profile();
        let id = format!("{}-i-{}", self.prefix, self.journeys);
        let mut attributes = BTreeMap::new();
        if self.rng.random_bool(0.3) {
            attributes.insert(
                "plan".to_string(),
                ["basic", "plus", "business"][self.rng.random_range(0..3)].to_string(),
            );
        }
        let agent = matches!(
            p.channel,
            Channel::Phone | Channel::Chat | Channel::Email | Channel::Field
        )
        .then(|| format!("agent-{}", self.rng.random_range(0..400)));
        let interaction = Interaction {
            interaction_id: id.clone(),
            occurred_at: now_ms - 2000,
            service: p.service.to_string(),
            channel: p.channel,
            kind: p.kind.to_string(),
            customer_ref: format!("cust-{}", self.rng.random_range(0..50_000)),
            product: p.product.map(str::to_string),
            region: Some(REGIONS[self.rng.random_range(0..REGIONS.len())].to_string()),
            agent_id: agent,
            team: p.explicit.map(str::to_string),
            attributes,
        };
        let gi = Generated {
            item: Item::Interaction(interaction),
            team: p.team,
            duplicate: false,
        };
        if !self.rng.random_bool(self.mix.rated) {
            return gi;
        }
        let metric = match self.rng.random_range(0..10) {
            0..=4 => Metric::Csat,
            5..=7 => Metric::Nps,
            _ => Metric::Ces,
        };
        let channel = if self.rng.random_bool(0.5) {
            Channel::Email
        } else {
            p.channel
        };
        let survey = Survey {
            service: "survey",
            channel,
            metric,
            quality: p.quality,
            product: p.product,
        };
        let r = self.rating(Some(id), survey, now_ms);
        let gr = Generated {
            item: Item::Rating(r),
            team: p.team,
            duplicate: false,
        };
        let wait = self.rng.random_range(1..400);
        if self.rng.random_bool(self.mix.early) {
            self.delay(gi, wait);
            self.maybe_duplicate(gr)
        } else {
            let gr = self.maybe_duplicate_later(gr, wait);
            self.delay(gr, wait);
            gi
        }
    }

    fn maybe_duplicate(&mut self, g: Generated) -> Generated {
        if self.rng.random_bool(self.mix.duplicate) {
            let wait = self.rng.random_range(1..2000);
            self.delay(
                Generated {
                    duplicate: true,
                    ..g.clone()
                },
                wait,
            );
        }
        g
    }

    fn maybe_duplicate_later(&mut self, g: Generated, after: u64) -> Generated {
        if self.rng.random_bool(self.mix.duplicate) {
            let wait = after + self.rng.random_range(1..2000);
            self.delay(
                Generated {
                    duplicate: true,
                    ..g.clone()
                },
                wait,
            );
        }
        g
    }

    /// The next item to send, created at event time `now_ms`.
    pub fn next_item(&mut self, now_ms: i64) -> Generated {
        self.step += 1;
        if let Some(Reverse((due, _, slot))) = self.delayed.peek().copied() {
            if due <= self.step {
                self.delayed.pop();
                self.free.push(slot);
                return self.slots[slot].take().expect("delayed slot is filled");
            }
        }
        self.journey(now_ms)
    }

    /// Everything still delayed, in due order (send it to end a run cleanly).
    pub fn drain(&mut self) -> Vec<Generated> {
        let mut out = Vec::with_capacity(self.delayed.len());
        while let Some(Reverse((_, _, slot))) = self.delayed.pop() {
            out.push(self.slots[slot].take().expect("delayed slot is filled"));
        }
        out
    }

    /// `n` items then the drain: a finite workload.
    pub fn generate(&mut self, n: usize, now_ms: i64) -> Vec<Generated> {
        let mut v: Vec<Generated> = (0..n).map(|_| self.next_item(now_ms)).collect();
        v.extend(self.drain());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn requests_never_repeat_an_id_and_keep_the_order() {
        let all = Workload::new(3, "t", Mix::default()).generate(5_000, 1_000_000);
        let ratings: Vec<Generated> = all
            .into_iter()
            .filter(|g| matches!(g.item, Item::Rating(_)))
            .collect();
        let ids: Vec<String> = ratings.iter().map(|g| g.item.id().to_string()).collect();
        assert!(
            ids.len() > ids.iter().collect::<HashSet<_>>().len(),
            "the workload repeats some ids"
        );
        let requests = split_requests(ratings, 50);
        for r in &requests {
            assert!(!r.is_empty() && r.len() <= 50);
            let unique: HashSet<&str> = r.iter().map(|g| g.item.id()).collect();
            assert_eq!(unique.len(), r.len());
        }
        let flat: Vec<String> = requests
            .iter()
            .flatten()
            .map(|g| g.item.id().to_string())
            .collect();
        assert_eq!(flat, ids);
    }

    #[test]
    fn deterministic_and_shaped_as_documented() {
        let a = Workload::new(7, "t", Mix::default()).generate(20_000, 1_000_000);
        let b = Workload::new(7, "t", Mix::default()).generate(20_000, 1_000_000);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.item.id() == y.item.id()));
        let mut seen_interactions = HashSet::new();
        let (mut early, mut dups, mut ratings, mut standalone) = (0, 0, 0, 0);
        for g in &a {
            match &g.item {
                Item::Interaction(i) => {
                    if !g.duplicate {
                        seen_interactions.insert(i.interaction_id.clone());
                    }
                }
                Item::Rating(r) => {
                    if g.duplicate {
                        dups += 1;
                        continue;
                    }
                    ratings += 1;
                    match &r.interaction_id {
                        None => standalone += 1,
                        Some(id) if !seen_interactions.contains(id) => early += 1,
                        _ => {}
                    }
                }
            }
        }
        let interactions = seen_interactions.len();
        let share = |x: usize, of: usize| x as f64 / of as f64;
        assert!(
            (0.55..0.65).contains(&share(ratings - standalone, interactions)),
            "rated share"
        );
        assert!(
            (0.07..0.13).contains(&share(early, ratings)),
            "early share {}",
            share(early, ratings)
        );
        assert!(
            (0.03..0.07).contains(&share(dups, ratings)),
            "duplicate share"
        );
        assert!(standalone > 0);
        // Every rating that names an interaction eventually gets it.
        for g in &a {
            if let Item::Rating(r) = &g.item {
                if let Some(id) = &r.interaction_id {
                    assert!(
                        seen_interactions.contains(id),
                        "rating {} refers to a missing interaction",
                        r.rating_id
                    );
                }
            }
        }
    }
}
