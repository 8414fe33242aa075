//! The attribution engine: explicit team, best claim or `unowned` for interactions; the
//! rating ↔ interaction join (whichever arrives first) within an event-time horizon;
//! deduplication of ids within that horizon.
//!
//! One engine holds the state of one input partition (interactions and ratings are
//! co-partitioned by key). Every state change is also recorded as a changelog record
//! ([`Engine::take_changes`]) so that the caller can write it, in the same Kafka transaction
//! as the outputs, to a compacted topic; [`Engine::restore`] rebuilds the state from it.
//! The caller decides when to call [`Engine::expire`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use feedback_events::{
    AttributedEvent, Attribution, ClaimRef, Event, Interaction, Rating, SourceRef, UNOWNED,
};

use crate::files::{Ownership, Subject};
use crate::state::{Entry, StateError};

/// What the engine remembers of an interaction, for the ratings that refer to it: the
/// decision (team, claim, ownership version) that its ratings inherit.
#[derive(Debug, Clone)]
struct Known {
    team: Arc<str>,
    version: Arc<str>,
    claim: Option<(Arc<str>, i32)>,
    kind: Arc<str>,
    occurred_at: i64,
}

#[derive(Debug, Clone)]
struct Parked {
    rating: Rating,
    source: SourceRef,
    /// When the engine parked it (processing time), for the join latency.
    parked_at_ms: i64,
}

/// Counters describing the state, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub interactions: usize,
    pub parked: usize,
    /// Rating ids remembered for deduplication (parked ones included).
    pub ratings: usize,
    pub watermark_ms: i64,
}

/// One changelog record: key and value (see [`crate::state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub value: Vec<u8>,
}

pub struct Engine {
    ownership: Arc<Ownership>,
    horizon_ms: i64,
    interactions: HashMap<Box<str>, Known>,
    /// Rating ids seen within the horizon → event time.
    ratings: HashMap<Box<str>, i64>,
    /// interaction id → ratings waiting for it.
    parked: HashMap<Box<str>, Vec<Parked>>,
    /// Parked ratings by event time: (occurred_at, interaction id) of each, so that the
    /// ones whose wait is over are found without scanning.
    deadlines: BTreeSet<(i64, Box<str>)>,
    /// Highest event time seen: the engine's notion of "now" in event time.
    watermark: i64,
    /// Team names, versions, kinds and claim files, shared by every entry that uses them.
    interner: HashSet<Arc<str>>,
    changes: Vec<Change>,
    /// Processing-time waits (ms) of ratings released since the last call to
    /// [`Engine::take_join_waits`].
    join_waits: Vec<i64>,
    /// During a restore: parked ratings by rating id (a later record of the key may say
    /// the rating is done); moved into `parked` by [`Engine::finish_restore`].
    restoring: HashMap<Box<str>, Parked>,
}

/// Outcome of offering one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Zero or more attributed events to emit (a rating can be parked: zero).
    Emit(Vec<AttributedEvent>),
    /// The id was seen within the horizon: nothing new for it; the list holds orphans
    /// the event's time released (usually none).
    Duplicate(Vec<AttributedEvent>),
}

impl Engine {
    pub fn new(ownership: Arc<Ownership>, horizon_ms: i64) -> Self {
        Engine {
            ownership,
            horizon_ms,
            interactions: HashMap::new(),
            ratings: HashMap::new(),
            parked: HashMap::new(),
            deadlines: BTreeSet::new(),
            watermark: i64::MIN,
            interner: HashSet::new(),
            changes: Vec::new(),
            join_waits: Vec::new(),
            restoring: HashMap::new(),
        }
    }

    pub fn ownership(&self) -> &Arc<Ownership> {
        &self.ownership
    }

    /// Replaces the ownership files in force (hot reload); later decisions use the new version.
    pub fn set_ownership(&mut self, ownership: Arc<Ownership>) {
        self.ownership = ownership;
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            interactions: self.interactions.len(),
            parked: self.parked.values().map(Vec::len).sum(),
            ratings: self.ratings.len(),
            watermark_ms: self.watermark,
        }
    }

    /// The event-time watermark (highest event time seen), `i64::MIN` before any event.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Moves the watermark forward (never back), e.g. to the highest watermark of the
    /// other partitions, so that a quiet partition still expires its parked ratings.
    pub fn advance_watermark(&mut self, t: i64) {
        self.watermark = self.watermark.max(t);
    }

    /// Whether a parked rating is older than `cutoff` (event time), i.e. due as an orphan.
    pub fn has_expired_parked(&self, cutoff: i64) -> bool {
        self.deadlines.first().is_some_and(|(t, _)| *t < cutoff)
    }

    fn cutoff(&self) -> i64 {
        if self.watermark == i64::MIN {
            i64::MIN
        } else {
            self.watermark.saturating_sub(self.horizon_ms)
        }
    }

    /// Emits, as orphans, the parked ratings whose wait the watermark has ended: event
    /// time older than watermark − horizon. Called before every event is handled, so the
    /// outcome does not depend on how input is batched.
    fn release_due(&mut self, now_ms: i64, out: &mut Vec<AttributedEvent>) {
        let cutoff = self.cutoff();
        while let Some((t, _)) = self.deadlines.first() {
            if *t >= cutoff {
                break;
            }
            let Some((t, iid)) = self.deadlines.pop_first() else {
                break;
            };
            let Some(list) = self.parked.get_mut(&iid) else {
                continue;
            };
            let (due, keep): (Vec<Parked>, Vec<Parked>) =
                list.drain(..).partition(|p| p.rating.occurred_at == t);
            if keep.is_empty() {
                self.parked.remove(&iid);
            } else {
                *list = keep;
            }
            for p in due {
                self.record(
                    format!("r:{}", p.rating.rating_id),
                    &Entry::RatingDone {
                        occurred_at: p.rating.occurred_at,
                    },
                );
                let (team, attribution, claim) = self.by_claims(&Subject::from(&p.rating));
                let mut a = self.out(
                    Event::Rating(p.rating),
                    team,
                    attribution,
                    claim,
                    p.source,
                    now_ms,
                );
                a.orphan = true;
                out.push(a);
            }
        }
    }

    fn park(&mut self, iid: Box<str>, p: Parked) {
        self.deadlines.insert((p.rating.occurred_at, iid.clone()));
        self.parked.entry(iid).or_default().push(p);
    }

    /// An estimate of the heap bytes the state holds: hash table slots (entry plus one
    /// control byte) at their allocated capacity, the key strings, and parked ratings'
    /// own strings. Interned names are shared and not counted per key.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let keys = |n: usize| n; // one heap allocation per key, of its length
                                 // A table of capacity c has about c * 8 / 7 buckets (7/8 maximum load).
        let buckets = |c: usize| c + c / 7;
        let mut b = buckets(self.interactions.capacity()) * (size_of::<(Box<str>, Known)>() + 1)
            + buckets(self.ratings.capacity()) * (size_of::<(Box<str>, i64)>() + 1)
            + buckets(self.parked.capacity()) * (size_of::<(Box<str>, Vec<Parked>)>() + 1)
            + self.deadlines.len() * (size_of::<(i64, Box<str>)>() + 16);
        b += self
            .interactions
            .keys()
            .map(|k| keys(k.len()))
            .sum::<usize>();
        b += self.ratings.keys().map(|k| keys(k.len())).sum::<usize>();
        for (k, v) in &self.parked {
            b += 2 * k.len() + v.capacity() * size_of::<Parked>();
            for p in v {
                let r = &p.rating;
                b += r.rating_id.len()
                    + r.interaction_id.as_ref().map_or(0, String::len)
                    + r.comment.as_ref().map_or(0, String::len)
                    + r.service.len()
                    + r.customer_ref.len()
                    + r.product.as_ref().map_or(0, String::len)
                    + r.region.as_ref().map_or(0, String::len)
                    + r.attributes
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 48)
                        .sum::<usize>()
                    + p.source.topic.len();
            }
        }
        b
    }

    /// The changelog records of every state change since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// How long (processing time, ms) each rating released from parking since the last call
    /// waited for its interaction.
    pub fn take_join_waits(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.join_waits)
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interner.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interner.insert(a.clone());
        a
    }

    fn record(&mut self, key: String, entry: &Entry) {
        self.changes.push(Change {
            key,
            value: entry.encode(),
        });
    }

    fn out(
        &self,
        event: Event,
        team: String,
        attribution: Attribution,
        claim: Option<ClaimRef>,
        source: SourceRef,
        now_ms: i64,
    ) -> AttributedEvent {
        AttributedEvent {
            event,
            team,
            attribution,
            claim,
            ownership_version: self.ownership.version.clone(),
            orphan: false,
            interaction_kind: None,
            source,
            attributed_at: now_ms,
        }
    }

    fn by_claims(&self, s: &Subject<'_>) -> (String, Attribution, Option<ClaimRef>) {
        match self.ownership.best_claim(s) {
            Some(c) => (c.team.clone(), Attribution::Claim, Some(c.claim_ref())),
            None => (UNOWNED.to_string(), Attribution::Unowned, None),
        }
    }

    /// Attributes an interaction and releases the ratings parked for it.
    pub fn on_interaction(&mut self, i: Interaction, source: SourceRef, now_ms: i64) -> Outcome {
        self.advance_watermark(i.occurred_at);
        let mut emit = Vec::with_capacity(1);
        self.release_due(now_ms, &mut emit);
        let cutoff = self.cutoff();
        if self
            .interactions
            .get(i.interaction_id.as_str())
            .is_some_and(|k| k.occurred_at >= cutoff)
        {
            return Self::duplicate_or(emit);
        }
        let (team, attribution, claim) = match i
            .team
            .as_deref()
            .filter(|t| self.ownership.team(t).is_some())
        {
            Some(t) => (t.to_string(), Attribution::Explicit, None),
            None => self.by_claims(&Subject::from(&i)),
        };
        let version = self.ownership.version.clone();
        let known = Known {
            team: self.intern(&team),
            version: self.intern(&version),
            claim: claim.as_ref().map(|c| (self.intern(&c.file), c.index)),
            kind: self.intern(&i.kind),
            occurred_at: i.occurred_at,
        };
        self.record(
            format!("i:{}", i.interaction_id),
            &Entry::Interaction {
                occurred_at: i.occurred_at,
                team: team.clone(),
                version,
                kind: i.kind.clone(),
                claim: claim.as_ref().map(|c| (c.file.clone(), c.index)),
            },
        );
        emit.push(self.out(
            Event::Interaction(i.clone()),
            team,
            attribution,
            claim,
            source,
            now_ms,
        ));
        if let Some(waiting) = self.parked.remove(i.interaction_id.as_str()) {
            for p in waiting {
                self.deadlines
                    .remove(&(p.rating.occurred_at, i.interaction_id.as_str().into()));
                self.record(
                    format!("r:{}", p.rating.rating_id),
                    &Entry::RatingDone {
                        occurred_at: p.rating.occurred_at,
                    },
                );
                self.join_waits.push(now_ms.saturating_sub(p.parked_at_ms));
                emit.push(Self::joined(p.rating, &known, p.source, now_ms));
            }
        }
        self.interactions
            .insert(i.interaction_id.into_boxed_str(), known);
        Outcome::Emit(emit)
    }

    fn joined(r: Rating, k: &Known, source: SourceRef, now_ms: i64) -> AttributedEvent {
        AttributedEvent {
            event: Event::Rating(r),
            team: k.team.to_string(),
            attribution: Attribution::Interaction,
            claim: k.claim.as_ref().map(|(file, index)| ClaimRef {
                file: file.to_string(),
                index: *index,
            }),
            ownership_version: k.version.to_string(),
            orphan: false,
            interaction_kind: Some(k.kind.to_string()),
            source,
            attributed_at: now_ms,
        }
    }

    /// Attributes a rating: joined to its interaction when known, parked when its
    /// interaction may still come, by its own fields when it names none.
    pub fn on_rating(&mut self, r: Rating, source: SourceRef, now_ms: i64) -> Outcome {
        self.advance_watermark(r.occurred_at);
        let mut emit = Vec::new();
        self.release_due(now_ms, &mut emit);
        let cutoff = self.cutoff();
        if self
            .ratings
            .get(r.rating_id.as_str())
            .is_some_and(|t| *t >= cutoff)
        {
            return Self::duplicate_or(emit);
        }
        self.ratings
            .insert(r.rating_id.clone().into_boxed_str(), r.occurred_at);
        let key = format!("r:{}", r.rating_id);
        let Some(iid) = r.interaction_id.clone() else {
            self.record(
                key,
                &Entry::RatingDone {
                    occurred_at: r.occurred_at,
                },
            );
            let (team, attribution, claim) = self.by_claims(&Subject::from(&r));
            emit.push(self.out(Event::Rating(r), team, attribution, claim, source, now_ms));
            return Outcome::Emit(emit);
        };
        if let Some(k) = self
            .interactions
            .get(iid.as_str())
            .filter(|k| k.occurred_at >= cutoff)
        {
            let a = Self::joined(r, k, source, now_ms);
            if let Event::Rating(r) = &a.event {
                let done = Entry::RatingDone {
                    occurred_at: r.occurred_at,
                };
                self.record(key, &done);
            }
            emit.push(a);
            return Outcome::Emit(emit);
        }
        self.record(
            key,
            &Entry::RatingParked {
                occurred_at: r.occurred_at,
                source: source.clone(),
                rating: Box::new(r.clone()),
            },
        );
        self.park(
            iid.into_boxed_str(),
            Parked {
                rating: r,
                source,
                parked_at_ms: now_ms,
            },
        );
        Outcome::Emit(emit)
    }

    fn duplicate_or(emit: Vec<AttributedEvent>) -> Outcome {
        Outcome::Duplicate(emit)
    }

    /// Forgets what lies beyond the horizon (behind the event-time watermark) and emits the
    /// ratings whose interaction did not come in time, attributed by their own fields and
    /// marked as orphans. Event time drives this, so replays decide the same way.
    ///
    /// Forgotten entries are not tombstoned in the changelog: [`Engine::restore`] drops
    /// them by the same rule, and the topic's retention deletes them.
    pub fn expire(&mut self, now_ms: i64) -> Vec<AttributedEvent> {
        if self.watermark == i64::MIN {
            return Vec::new();
        }
        let cutoff = self.cutoff();
        self.ratings.retain(|_, t| *t >= cutoff);
        self.interactions.retain(|_, k| k.occurred_at >= cutoff);
        let mut orphans = Vec::new();
        self.release_due(now_ms, &mut orphans);
        orphans
    }

    /// Applies one changelog record (the latest record of a key wins, so records must be
    /// applied in changelog order). Call [`Engine::finish_restore`] after the last one.
    pub fn restore(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<(), StateError> {
        let (kind, id) = key
            .split_once(':')
            .ok_or_else(|| StateError::NoKindPrefix { key: key.into() })?;
        let Some(value) = value else {
            match kind {
                "i" => {
                    self.interactions.remove(id);
                }
                _ => {
                    self.ratings.remove(id);
                    self.restoring.remove(id);
                }
            }
            return Ok(());
        };
        let entry = Entry::decode(value).map_err(|e| StateError::Entry {
            key: key.into(),
            error: Box::new(e),
        })?;
        match (kind, entry) {
            (
                "i",
                Entry::Interaction {
                    occurred_at,
                    team,
                    version,
                    kind,
                    claim,
                },
            ) => {
                self.advance_watermark(occurred_at);
                let known = Known {
                    team: self.intern(&team),
                    version: self.intern(&version),
                    claim: claim.map(|(f, i)| (self.intern(&f), i)),
                    kind: self.intern(&kind),
                    occurred_at,
                };
                self.interactions.insert(id.into(), known);
            }
            ("r", Entry::RatingDone { occurred_at }) => {
                self.advance_watermark(occurred_at);
                self.ratings.insert(id.into(), occurred_at);
                self.restoring.remove(id);
            }
            (
                "r",
                Entry::RatingParked {
                    occurred_at,
                    source,
                    rating,
                },
            ) => {
                self.advance_watermark(occurred_at);
                self.ratings.insert(id.into(), occurred_at);
                self.restoring.insert(
                    id.into(),
                    Parked {
                        rating: *rating,
                        source,
                        parked_at_ms: now_ms,
                    },
                );
            }
            (k, e) => {
                return Err(StateError::Mismatch {
                    key: key.into(),
                    kind: k.into(),
                    entry: format!("{e:?}"),
                })
            }
        }
        Ok(())
    }

    /// Ends a restore: drops what the horizon already passed (as [`Engine::expire`] would
    /// have, without emitting: parked ratings beyond the horizon are emitted by the next
    /// `expire`) and discards the restore's own change records.
    pub fn finish_restore(&mut self) {
        self.changes.clear();
        let mut restored: Vec<Parked> = self.restoring.drain().map(|(_, p)| p).collect();
        // Release order within one interaction follows the input order.
        restored.sort_by_key(|p| (p.source.topic.clone(), p.source.partition, p.source.offset));
        for p in restored {
            let iid = p.rating.interaction_id.clone().unwrap_or_default();
            self.park(iid.into_boxed_str(), p);
        }
        if self.watermark == i64::MIN {
            return;
        }
        let cutoff = self.watermark.saturating_sub(self.horizon_ms);
        self.ratings.retain(|_, t| *t >= cutoff);
        self.interactions.retain(|_, k| k.occurred_at >= cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use feedback_events::{Channel, Metric};

    const H: i64 = 7 * 86_400_000;

    fn engine() -> Engine {
        let files = vec![
            ("payments.toml".to_string(), "team = \"payments\"\n[[claim]]\nservice = \"checkout-api\"\n".to_string()),
            ("support.toml".to_string(), "team = \"support\"\n[[claim]]\nkind = \"support_ticket\"\n[[claim]]\nservice = \"survey\"\nmetric = \"ces\"\n".to_string()),
        ];
        let o = Ownership::from_files(&files);
        assert!(o.diagnostics.is_empty(), "{:?}", o.diagnostics);
        Engine::new(Arc::new(o), H)
    }

    fn interaction(id: &str, t: i64, service: &str, team: Option<&str>) -> Interaction {
        Interaction {
            interaction_id: id.into(),
            occurred_at: t,
            service: service.into(),
            channel: Channel::Web,
            kind: "order".into(),
            customer_ref: "c".into(),
            product: None,
            region: None,
            agent_id: None,
            team: team.map(Into::into),
            attributes: Default::default(),
        }
    }

    fn rating(id: &str, t: i64, iid: Option<&str>, metric: Metric) -> Rating {
        Rating {
            rating_id: id.into(),
            occurred_at: t,
            interaction_id: iid.map(Into::into),
            metric,
            score: 5,
            comment: None,
            service: "survey".into(),
            channel: Channel::Email,
            customer_ref: "c".into(),
            product: None,
            region: None,
            attributes: Default::default(),
        }
    }

    fn emitted(o: Outcome) -> Vec<(String, String, Attribution, bool)> {
        match o {
            Outcome::Emit(v) => v
                .into_iter()
                .map(|a| (a.event.id().to_string(), a.team, a.attribution, a.orphan))
                .collect(),
            Outcome::Duplicate(_) => panic!("unexpected duplicate"),
        }
    }

    #[test]
    fn explicit_team_wins_unknown_team_falls_back_to_claims() {
        let mut e = engine();
        let s = SourceRef::default();
        assert_eq!(
            emitted(e.on_interaction(
                interaction("i1", 1, "checkout-api", Some("support")),
                s.clone(),
                0
            )),
            vec![("i1".into(), "support".into(), Attribution::Explicit, false)]
        );
        assert_eq!(
            emitted(e.on_interaction(
                interaction("i2", 1, "checkout-api", Some("nobody")),
                s.clone(),
                0
            )),
            vec![("i2".into(), "payments".into(), Attribution::Claim, false)]
        );
        assert_eq!(
            emitted(e.on_interaction(interaction("i3", 1, "other", None), s, 0)),
            vec![("i3".into(), UNOWNED.into(), Attribution::Unowned, false)]
        );
    }

    #[test]
    fn rating_joins_whichever_arrives_first_and_duplicates_count_once() {
        let mut e = engine();
        let s = SourceRef::default();
        assert!(
            emitted(e.on_rating(rating("r1", 10, Some("i1"), Metric::Csat), s.clone(), 0))
                .is_empty()
        );
        assert!(matches!(
            e.on_rating(rating("r1", 10, Some("i1"), Metric::Csat), s.clone(), 0),
            Outcome::Duplicate(_)
        ));
        assert_eq!(
            emitted(e.on_interaction(interaction("i1", 5, "checkout-api", None), s.clone(), 0)),
            vec![
                ("i1".into(), "payments".into(), Attribution::Claim, false),
                (
                    "r1".into(),
                    "payments".into(),
                    Attribution::Interaction,
                    false
                )
            ]
        );
        assert_eq!(
            emitted(e.on_rating(rating("r2", 11, Some("i1"), Metric::Nps), s.clone(), 0)),
            vec![(
                "r2".into(),
                "payments".into(),
                Attribution::Interaction,
                false
            )]
        );
        assert!(matches!(
            e.on_interaction(interaction("i1", 5, "checkout-api", None), s, 0),
            Outcome::Duplicate(_)
        ));
    }

    #[test]
    fn parked_rating_becomes_an_orphan_after_the_horizon_in_event_time() {
        let mut e = engine();
        let s = SourceRef::default();
        assert!(
            emitted(e.on_rating(rating("r1", 0, Some("missing"), Metric::Ces), s.clone(), 0))
                .is_empty()
        );
        assert!(e.expire(0).is_empty());
        // Event time moves past the horizon through another event, which releases the
        // orphan before its own output (so batching cannot change the result).
        let Outcome::Emit(o) = e.on_interaction(interaction("i9", H + 1, "other", None), s, 0)
        else {
            panic!()
        };
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].event.id(), "i9");
        assert_eq!(
            (o[0].team.as_str(), o[0].attribution, o[0].orphan),
            ("support", Attribution::Claim, true)
        );
        assert_eq!(e.stats().parked, 0);
        assert!(e.expire(0).is_empty(), "nothing left to release");
        assert_eq!(
            (e.stats().ratings, e.stats().interactions),
            (0, 1),
            "r1 left the dedup window, i9 stays"
        );
    }

    fn ids(v: &[AttributedEvent]) -> Vec<(String, String, Attribution, bool, String)> {
        v.iter()
            .map(|a| {
                (
                    a.event.id().to_string(),
                    a.team.clone(),
                    a.attribution,
                    a.orphan,
                    a.ownership_version.clone(),
                )
            })
            .collect()
    }

    /// Replays `changes` (in order) into a fresh engine, as the attributor does after a
    /// crash or when it takes over a partition.
    fn restored(changes: &[Change]) -> Engine {
        let mut b = engine();
        for c in changes {
            b.restore(&c.key, Some(&c.value), 0).unwrap();
        }
        b.finish_restore();
        b
    }

    #[test]
    fn state_restored_from_the_changelog_decides_exactly_like_the_original() {
        let s = SourceRef::default();
        let mut a = engine();
        let mut log = Vec::new();
        // r1 parked (interaction i1 later), r2 joins i2 at once, r3 parked forever (orphan),
        // r4 has no interaction, i2 and r2 will come again as duplicates.
        emitted(a.on_rating(rating("r1", 100, Some("i1"), Metric::Csat), s.clone(), 0));
        emitted(a.on_interaction(interaction("i2", 90, "checkout-api", None), s.clone(), 0));
        emitted(a.on_rating(rating("r2", 110, Some("i2"), Metric::Nps), s.clone(), 0));
        emitted(a.on_rating(rating("r3", 120, Some("never"), Metric::Ces), s.clone(), 0));
        emitted(a.on_rating(rating("r4", 130, None, Metric::Ces), s.clone(), 0));
        log.extend(a.take_changes());
        assert_eq!(
            log.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
            vec!["r:r1", "i:i2", "r:r2", "r:r3", "r:r4"]
        );
        let mut b = restored(&log);
        assert_eq!(a.stats(), b.stats());
        assert_eq!(b.stats().parked, 2);

        // The same continuation on both: duplicates, the late interaction, the horizon.
        for e in [&mut a, &mut b] {
            assert_eq!(
                e.on_interaction(interaction("i2", 90, "checkout-api", None), s.clone(), 0),
                Outcome::Duplicate(vec![])
            );
            assert_eq!(
                e.on_rating(rating("r2", 110, Some("i2"), Metric::Nps), s.clone(), 0),
                Outcome::Duplicate(vec![])
            );
            assert_eq!(
                e.on_rating(rating("r1", 100, Some("i1"), Metric::Csat), s.clone(), 0),
                Outcome::Duplicate(vec![])
            );
        }
        let out_a = emitted(a.on_interaction(
            interaction("i1", 95, "other", Some("support")),
            s.clone(),
            0,
        ));
        let out_b = emitted(b.on_interaction(
            interaction("i1", 95, "other", Some("support")),
            s.clone(),
            0,
        ));
        assert_eq!(out_a, out_b);
        assert_eq!(
            out_a,
            vec![
                ("i1".into(), "support".into(), Attribution::Explicit, false),
                (
                    "r1".into(),
                    "support".into(),
                    Attribution::Interaction,
                    false
                ),
            ]
        );
        // A second restore, from everything written so far, still knows r1 is done.
        log.extend(a.take_changes());
        let mut c = restored(&log);
        assert_eq!(c.stats().parked, 1, "only r3 still waits");
        let late = |e: &mut Engine| match e.on_interaction(
            interaction("late", 120 + H + 1, "other", None),
            s.clone(),
            0,
        ) {
            Outcome::Emit(mut v) => {
                assert_eq!(
                    v.pop().map(|a| a.event.id().to_string()).as_deref(),
                    Some("late")
                );
                v
            }
            o => panic!("{o:?}"),
        };
        let (oa, ob, oc) = (late(&mut a), late(&mut b), late(&mut c));
        assert_eq!(ids(&oa), ids(&ob));
        assert_eq!(ids(&oa), ids(&oc));
        assert_eq!(oa.len(), 1);
        assert_eq!(
            (
                oa[0].event.id(),
                oa[0].team.as_str(),
                oa[0].attribution,
                oa[0].orphan
            ),
            ("r3", "support", Attribution::Claim, true)
        );
        // Once the orphan is emitted, a restore does not park it again.
        log.extend(a.take_changes());
        let mut d = restored(&log);
        assert_eq!(d.stats().parked, 0);
        assert!(d.expire(0).is_empty());
    }

    #[test]
    fn a_joined_rating_names_the_version_its_interaction_was_attributed_under() {
        let s = SourceRef::default();
        let mut e = engine();
        let v1 = e.ownership().version.clone();
        emitted(e.on_interaction(interaction("i1", 1, "checkout-api", None), s.clone(), 0));
        let files = vec![(
            "payments.toml".to_string(),
            "team = \"payments\"\n[[claim]]\nservice = \"other\"\n".to_string(),
        )];
        e.set_ownership(Arc::new(Ownership::from_files(&files)));
        let Outcome::Emit(v) = e.on_rating(rating("r1", 2, Some("i1"), Metric::Csat), s.clone(), 0)
        else {
            panic!()
        };
        assert_eq!(
            (v[0].team.as_str(), v[0].ownership_version.as_str()),
            ("payments", v1.as_str())
        );
        let Outcome::Emit(v) = e.on_interaction(interaction("i2", 3, "checkout-api", None), s, 0)
        else {
            panic!()
        };
        assert_eq!(
            v[0].team, UNOWNED,
            "new version: checkout-api is nobody's now"
        );
        assert_ne!(v[0].ownership_version, v1);
    }
}
