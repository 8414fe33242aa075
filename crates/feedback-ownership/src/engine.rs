//! The attribution engine: explicit team, best claim or `unowned` for interactions; the
//! rating ↔ interaction join (whichever arrives first) within an event-time horizon;
//! deduplication of ids within that horizon.
//!
//! State is in memory here; the attributor decides when to call [`Engine::expire`].

use std::collections::HashMap;
use std::sync::Arc;

use feedback_events::{
    AttributedEvent, Attribution, ClaimRef, Event, Interaction, Rating, SourceRef, UNOWNED,
};

use crate::files::{Ownership, Subject};

/// What the engine remembers of an interaction, for the ratings that refer to it.
#[derive(Debug, Clone)]
struct Known {
    team: String,
    claim: Option<ClaimRef>,
    kind: String,
    occurred_at: i64,
}

#[derive(Debug, Clone)]
struct Parked {
    rating: Rating,
    source: SourceRef,
}

/// Counters describing the state, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub interactions: usize,
    pub parked: usize,
    pub seen: usize,
    pub watermark_ms: i64,
}

pub struct Engine {
    ownership: Arc<Ownership>,
    horizon_ms: i64,
    interactions: HashMap<String, Known>,
    /// interaction id → ratings waiting for it.
    parked: HashMap<String, Vec<Parked>>,
    /// Ids seen within the horizon ("i:" or "r:" + id) → event time.
    seen: HashMap<String, i64>,
    /// Highest event time seen: the engine's notion of "now" in event time.
    watermark: i64,
}

/// Outcome of offering one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Zero or more attributed events to emit (a rating can be parked: zero).
    Emit(Vec<AttributedEvent>),
    /// The id was seen within the horizon: nothing new.
    Duplicate,
}

impl Engine {
    pub fn new(ownership: Arc<Ownership>, horizon_ms: i64) -> Self {
        Engine {
            ownership,
            horizon_ms,
            interactions: HashMap::new(),
            parked: HashMap::new(),
            seen: HashMap::new(),
            watermark: i64::MIN,
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
            seen: self.seen.len(),
            watermark_ms: self.watermark,
        }
    }

    fn first_sighting(&mut self, key: String, t: i64) -> bool {
        self.watermark = self.watermark.max(t);
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key, t);
        true
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
        if !self.first_sighting(format!("i:{}", i.interaction_id), i.occurred_at) {
            return Outcome::Duplicate;
        }
        let (team, attribution, claim) = match i
            .team
            .as_deref()
            .filter(|t| self.ownership.team(t).is_some())
        {
            Some(t) => (t.to_string(), Attribution::Explicit, None),
            None => self.by_claims(&Subject::from(&i)),
        };
        let known = Known {
            team: team.clone(),
            claim: claim.clone(),
            kind: i.kind.clone(),
            occurred_at: i.occurred_at,
        };
        let mut emit = Vec::with_capacity(1);
        if let Some(waiting) = self.parked.remove(&i.interaction_id) {
            for p in waiting {
                emit.push(self.joined(p.rating, &known, p.source, now_ms));
            }
        }
        self.interactions.insert(i.interaction_id.clone(), known);
        emit.insert(
            0,
            self.out(
                Event::Interaction(i),
                team,
                attribution,
                claim,
                source,
                now_ms,
            ),
        );
        Outcome::Emit(emit)
    }

    fn joined(&self, r: Rating, k: &Known, source: SourceRef, now_ms: i64) -> AttributedEvent {
        let mut a = self.out(
            Event::Rating(r),
            k.team.clone(),
            Attribution::Interaction,
            k.claim.clone(),
            source,
            now_ms,
        );
        a.interaction_kind = Some(k.kind.clone());
        a
    }

    /// Attributes a rating: joined to its interaction when known, parked when its
    /// interaction may still come, by its own fields when it names none.
    pub fn on_rating(&mut self, r: Rating, source: SourceRef, now_ms: i64) -> Outcome {
        if !self.first_sighting(format!("r:{}", r.rating_id), r.occurred_at) {
            return Outcome::Duplicate;
        }
        let Some(iid) = r.interaction_id.clone() else {
            let (team, attribution, claim) = self.by_claims(&Subject::from(&r));
            return Outcome::Emit(vec![self.out(
                Event::Rating(r),
                team,
                attribution,
                claim,
                source,
                now_ms,
            )]);
        };
        if let Some(k) = self.interactions.get(&iid) {
            return Outcome::Emit(vec![self.joined(r, k, source, now_ms)]);
        }
        self.parked
            .entry(iid)
            .or_default()
            .push(Parked { rating: r, source });
        Outcome::Emit(Vec::new())
    }

    /// Forgets what lies beyond the horizon (behind the event-time watermark) and emits the
    /// ratings whose interaction did not come in time, attributed by their own fields and
    /// marked as orphans. Event time drives this, so replays decide the same way.
    pub fn expire(&mut self, now_ms: i64) -> Vec<AttributedEvent> {
        if self.watermark == i64::MIN {
            return Vec::new();
        }
        let cutoff = self.watermark.saturating_sub(self.horizon_ms);
        self.seen.retain(|_, t| *t >= cutoff);
        self.interactions.retain(|_, k| k.occurred_at >= cutoff);
        let mut orphans = Vec::new();
        let expired: Vec<String> = self
            .parked
            .iter()
            .filter(|(_, v)| v.iter().all(|p| p.rating.occurred_at < cutoff))
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            for p in self.parked.remove(&key).unwrap_or_default() {
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
                orphans.push(a);
            }
        }
        orphans
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
            Outcome::Duplicate => panic!("unexpected duplicate"),
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
            Outcome::Duplicate
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
            Outcome::Duplicate
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
        // Event time moves past the horizon through another event.
        emitted(e.on_interaction(interaction("i9", H + 1, "other", None), s, 0));
        let o = e.expire(0);
        assert_eq!(o.len(), 1);
        assert_eq!(
            (o[0].team.as_str(), o[0].attribution, o[0].orphan),
            ("support", Attribution::Claim, true)
        );
        assert_eq!(e.stats().parked, 0);
        assert_eq!(e.stats().seen, 1, "r1 left the dedup window, i9 stays");
    }
}
