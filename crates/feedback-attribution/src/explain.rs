//! Why an event goes to a team (`feedback explain`), and what a sample of real events says
//! about the ownership files (`feedback ownership check --sample`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use feedback_events::{Event, UNOWNED};

use crate::files::{Claim, Diagnostic, Ownership, Severity, Subject};

/// One claim as evaluated against an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimVerdict {
    pub team: String,
    pub file: String,
    pub index: usize,
    pub line: usize,
    pub priority: i32,
    /// (field, patterns as written, the event's value, matched).
    pub fields: Vec<(String, Vec<String>, Option<String>, bool)>,
    pub matched: bool,
}

/// The decision for one event and everything considered on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub event_id: String,
    pub method: &'static str,
    pub team: String,
    pub claim: Option<(String, usize)>,
    pub version: String,
    pub claims: Vec<ClaimVerdict>,
    pub notes: Vec<String>,
}

fn field_value(s: &Subject<'_>, field: &str) -> Option<String> {
    match field {
        "service" => Some(s.service.to_string()),
        "channel" => Some(s.channel.as_str().to_string()),
        "kind" => s.kind.map(str::to_string),
        "product" => s.product.map(str::to_string),
        "region" => s.region.map(str::to_string),
        "metric" => s.metric.map(|m| m.as_str().to_string()),
        _ => None,
    }
}

fn verdict(c: &Claim, s: &Subject<'_>) -> ClaimVerdict {
    let fields: Vec<_> = c
        .fields
        .iter()
        .map(|(f, m)| {
            let v = field_value(s, f);
            let ok = v.as_deref().is_some_and(|v| m.is_match(v));
            (f.to_string(), m.patterns.clone(), v, ok)
        })
        .collect();
    ClaimVerdict {
        team: c.team.clone(),
        file: c.file.clone(),
        index: c.index,
        line: c.line,
        priority: c.priority,
        matched: fields.iter().all(|f| f.3),
        fields,
    }
}

fn subject(e: &Event) -> Subject<'_> {
    match e {
        Event::Interaction(i) => Subject::from(i),
        Event::Rating(r) => Subject::from(r),
    }
}

/// Explains how the attributor decides for `event` under `o`. Claims are listed in the
/// order they are tried (priority, then file, then index); the first match wins.
pub fn explain(o: &Ownership, event: &Event) -> Explanation {
    let s = subject(event);
    let claims: Vec<ClaimVerdict> = o.claims.iter().map(|c| verdict(c, &s)).collect();
    let best = claims.iter().find(|v| v.matched);
    let mut notes = Vec::new();
    let (method, team, claim) = match event {
        Event::Interaction(i) => match i.team.as_deref() {
            Some(t) if o.team(t).is_some() => {
                notes.push(format!(
                    "the interaction names team {t:?}, which has an ownership file: explicit teams win over claims"
                ));
                ("explicit", t.to_string(), None)
            }
            named => {
                if let Some(t) = named {
                    notes.push(format!(
                        "the interaction names team {t:?}, which has no ownership file, so claims decide"
                    ));
                }
                match best {
                    Some(b) => ("claim", b.team.clone(), Some((b.file.clone(), b.index))),
                    None => ("unowned", UNOWNED.to_string(), None),
                }
            }
        },
        Event::Rating(r) => {
            if let Some(iid) = &r.interaction_id {
                notes.push(format!(
                    "the rating names interaction {iid:?}: the attributor gives it that interaction's team (method interaction) when the interaction arrives within the horizon, before or after the rating; only if it never does is the rating marked orphan and decided by the claims below"
                ));
            }
            match best {
                Some(b) => ("claim", b.team.clone(), Some((b.file.clone(), b.index))),
                None => ("unowned", UNOWNED.to_string(), None),
            }
        }
    };
    Explanation {
        event_id: event.id().to_string(),
        method,
        team,
        claim,
        version: o.version.clone(),
        claims,
        notes,
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "event {}", self.event_id)?;
        match &self.claim {
            Some((file, index)) => writeln!(
                f,
                "decision: team {} by {} ({file} claim {index}) under ownership {}",
                self.team, self.method, self.version
            )?,
            None => writeln!(
                f,
                "decision: team {} by {} under ownership {}",
                self.team, self.method, self.version
            )?,
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        writeln!(
            f,
            "claims considered ({}, highest priority first; the first match wins):",
            self.claims.len()
        )?;
        let mut won = false;
        for c in &self.claims {
            let tag = if c.matched && !won {
                won = true;
                "MATCH, chosen"
            } else if c.matched {
                "match, lower in order"
            } else {
                "no match"
            };
            let why: Vec<String> = c
                .fields
                .iter()
                .map(|(field, pats, v, ok)| {
                    let v = v
                        .as_deref()
                        .map_or("(absent)".to_string(), |v| format!("{v:?}"));
                    format!(
                        "{field} {v} {} {}",
                        if *ok { "∈" } else { "∉" },
                        pats.join("|")
                    )
                })
                .collect();
            writeln!(
                f,
                "  {}:{} claim {} team {} priority {}: {tag}: {}",
                c.file,
                c.line,
                c.index,
                c.team,
                c.priority,
                why.join(", ")
            )?;
        }
        Ok(())
    }
}

/// What a sample of events says about the files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleReport {
    pub total: usize,
    /// Events per team (explicit or by claim); `unowned` holds what nobody claims.
    pub by_team: BTreeMap<String, usize>,
    /// Errors: claims of different teams at equal priority that both match a sample event.
    pub conflicts: Vec<Diagnostic>,
    /// Up to five example ids of events nobody claims.
    pub unclaimed_examples: Vec<String>,
}

/// Attributes every sample event by the files alone (explicit team, else the best claim;
/// ratings by their own fields) and finds equal-priority conflicts the events prove.
/// Pairs already reported by the static check of `o.diagnostics` are not repeated.
pub fn analyse_sample(o: &Ownership, events: &[Event]) -> SampleReport {
    let mut r = SampleReport {
        total: events.len(),
        ..Default::default()
    };
    // Every team appears, so a team sees when the sample holds nothing of its own.
    for t in &o.teams {
        r.by_team.insert(t.team.clone(), 0);
    }
    let already: BTreeSet<(String, usize)> = o
        .diagnostics
        .iter()
        .map(|d| (d.file.clone(), d.line))
        .collect();
    let mut seen_pairs = BTreeSet::new();
    for e in events {
        if let Event::Interaction(i) = e {
            if let Some(t) = i.team.as_deref().filter(|t| o.team(t).is_some()) {
                *r.by_team.entry(t.to_string()).or_default() += 1;
                continue;
            }
        }
        let s = subject(e);
        let matching: Vec<&Claim> = o.claims.iter().filter(|c| c.matches(&s)).collect();
        let Some(best) = matching.first() else {
            *r.by_team.entry(UNOWNED.to_string()).or_default() += 1;
            if r.unclaimed_examples.len() < 5 {
                r.unclaimed_examples.push(e.id().to_string());
            }
            continue;
        };
        *r.by_team.entry(best.team.clone()).or_default() += 1;
        for other in matching[1..]
            .iter()
            .filter(|c| c.priority == best.priority && c.team != best.team)
        {
            let key = (
                best.file.clone(),
                best.index,
                other.file.clone(),
                other.index,
            );
            if !seen_pairs.insert(key) || already.contains(&(other.file.clone(), other.line)) {
                continue;
            }
            let fields: Vec<String> = best
                .fields
                .keys()
                .chain(other.fields.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter_map(|f| field_value(&s, f).map(|v| format!("{f}={v}")))
                .collect();
            r.conflicts.push(Diagnostic {
                severity: Severity::Error,
                file: other.file.clone(),
                line: other.line,
                message: format!(
                    "claim {} of team {:?} and claim {} of team {:?} ({}:{}) both match sample event {} ({}) at equal priority {}; the tie goes to {:?} by file order only: give one a higher priority or narrow it",
                    other.index,
                    other.team,
                    best.index,
                    best.team,
                    best.file,
                    best.line,
                    e.id(),
                    fields.join(", "),
                    best.priority,
                    best.team
                ),
            });
        }
    }
    r
}

impl fmt::Display for SampleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sample: {} events", self.total)?;
        let mut rows: Vec<(&String, &usize)> = self.by_team.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (team, n) in rows {
            let share = if self.total == 0 {
                0.0
            } else {
                100.0 * *n as f64 / self.total as f64
            };
            let label = if team == UNOWNED {
                "unclaimed (nobody)".to_string()
            } else {
                team.clone()
            };
            writeln!(f, "  {label:<24} {n:>8} {share:>6.1}%")?;
        }
        if !self.unclaimed_examples.is_empty() {
            writeln!(
                f,
                "  unclaimed e.g.: {}",
                self.unclaimed_examples.join(", ")
            )?;
        }
        Ok(())
    }
}
