use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Where the customer met us. Avro enum `feedback.v1.Channel`; symbol order is the wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Phone,
    Chat,
    Email,
    Web,
    App,
    Store,
    Field,
    Social,
    Other,
}

/// Survey metric. Avro enum `feedback.v1.Metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    Csat,
    Nps,
    Ces,
}

/// How an event's team was found. Avro enum `feedback.v1.Attribution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribution {
    Explicit,
    Claim,
    Interaction,
    Unowned,
}

/// A name that is not one of an enum's symbols (channel, metric, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}; expected one of {expected}")]
pub struct UnknownSymbol {
    pub what: &'static str,
    pub value: String,
    pub expected: String,
}

macro_rules! symbols {
    ($ty:ident, $what:literal, [$($var:ident = $s:literal),+ $(,)?]) => {
        impl $ty {
            /// Every value, in Avro symbol order.
            pub const ALL: &'static [$ty] = &[$($ty::$var),+];
            /// The lower-case name used in JSON, Avro and ClickHouse.
            pub const fn as_str(self) -> &'static str {
                match self { $($ty::$var => $s),+ }
            }
            /// Index of the Avro enum symbol.
            pub const fn index(self) -> u32 { self as u32 }
            /// Value of an Avro enum symbol index.
            pub fn from_index(i: u32) -> Option<Self> { Self::ALL.get(i as usize).copied() }
            /// Comma-separated list of the accepted names, for error messages.
            pub fn expected() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $ty {
            type Err = UnknownSymbol;
            fn from_str(s: &str) -> Result<Self, UnknownSymbol> {
                match s {
                    $($s => Ok($ty::$var),)+
                    _ => Err(UnknownSymbol { what: $what, value: s.to_string(), expected: Self::expected() }),
                }
            }
        }
    };
}

symbols!(
    Channel,
    "channel",
    [
        Phone = "phone",
        Chat = "chat",
        Email = "email",
        Web = "web",
        App = "app",
        Store = "store",
        Field = "field",
        Social = "social",
        Other = "other"
    ]
);
symbols!(Metric, "metric", [Csat = "csat", Nps = "nps", Ces = "ces"]);
symbols!(
    Attribution,
    "attribution",
    [
        Explicit = "explicit",
        Claim = "claim",
        Interaction = "interaction",
        Unowned = "unowned"
    ]
);

impl Metric {
    /// Inclusive range of valid scores.
    pub const fn score_range(self) -> (i32, i32) {
        match self {
            Metric::Csat => (1, 5),
            Metric::Nps => (0, 10),
            Metric::Ces => (1, 7),
        }
    }

    /// The name people read: "CSAT", "NPS", "CES".
    pub const fn label(self) -> &'static str {
        match self {
            Metric::Csat => "CSAT",
            Metric::Nps => "NPS",
            Metric::Ces => "CES",
        }
    }

    /// Lowest score that counts as positive (CSAT satisfied 4–5, NPS promoter 9–10, CES
    /// easy 5–7). The SQL aggregates (`feedback_clickhouse::migrations::positive_sql`) and
    /// the test/drill oracle (`feedback_workload::oracle`) are both derived from it.
    pub const fn positive_from(self) -> i32 {
        match self {
            Metric::Csat => 4,
            Metric::Nps => 9,
            Metric::Ces => 5,
        }
    }

    /// Highest score that counts as negative (CSAT dissatisfied 1–2, NPS detractor 0–6,
    /// CES hard 1–3).
    pub const fn negative_to(self) -> i32 {
        match self {
            Metric::Csat => 2,
            Metric::Nps => 6,
            Metric::Ces => 3,
        }
    }

    pub const fn is_positive(self, score: i32) -> bool {
        score >= self.positive_from()
    }

    pub const fn is_negative(self, score: i32) -> bool {
        score <= self.negative_to()
    }

    /// How the metric's value is computed from the sums of its answers.
    pub const fn formula(self) -> MetricFormula {
        match self {
            Metric::Csat => MetricFormula::PositiveShare,
            Metric::Nps => MetricFormula::NetPositiveShare,
            Metric::Ces => MetricFormula::MeanScore,
        }
    }

    /// The metric's value from `responses` answers with these sums (unrounded; `None`
    /// without answers): CSAT = % positive, NPS = % positive − % negative, CES = mean score.
    pub fn value(
        self,
        responses: u64,
        score_sum: i64,
        positive: u64,
        negative: u64,
    ) -> Option<f64> {
        if responses == 0 {
            return None;
        }
        let r = responses as f64;
        Some(match self.formula() {
            MetricFormula::PositiveShare => 100.0 * positive as f64 / r,
            MetricFormula::NetPositiveShare => 100.0 * (positive as f64 - negative as f64) / r,
            MetricFormula::MeanScore => score_sum as f64 / r,
        })
    }
}

/// As its lower-case name (`"csat"`), like JSON, Avro and ClickHouse hold it.
impl serde::Serialize for Metric {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// From its lower-case name; any other value is an error naming the accepted ones.
impl<'de> serde::Deserialize<'de> for Metric {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The shape of a metric's value ([`Metric::formula`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricFormula {
    /// 100 × positive / responses.
    PositiveShare,
    /// 100 × (positive − negative) / responses.
    NetPositiveShare,
    /// score_sum / responses.
    MeanScore,
}

/// A customer interaction (`schemas/interaction.avsc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interaction {
    pub interaction_id: String,
    /// Event time, UTC milliseconds since the Unix epoch.
    pub occurred_at: i64,
    pub service: String,
    pub channel: Channel,
    pub kind: String,
    pub customer_ref: String,
    pub product: Option<String>,
    pub region: Option<String>,
    pub agent_id: Option<String>,
    pub team: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

/// A customer rating (`schemas/rating.avsc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rating {
    pub rating_id: String,
    /// Event time, UTC milliseconds since the Unix epoch.
    pub occurred_at: i64,
    pub interaction_id: Option<String>,
    pub metric: Metric,
    pub score: i32,
    pub comment: Option<String>,
    pub service: String,
    pub channel: Channel,
    pub customer_ref: String,
    pub product: Option<String>,
    pub region: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

impl Rating {
    /// The Kafka key: the interaction id when there is one (so a rating lands on its
    /// interaction's partition), else the rating id.
    pub fn key(&self) -> &str {
        self.interaction_id.as_deref().unwrap_or(&self.rating_id)
    }
}

/// Either kind of source event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Interaction(Interaction),
    Rating(Rating),
}

impl Event {
    pub fn id(&self) -> &str {
        match self {
            Event::Interaction(i) => &i.interaction_id,
            Event::Rating(r) => &r.rating_id,
        }
    }
    pub fn occurred_at(&self) -> i64 {
        match self {
            Event::Interaction(i) => i.occurred_at,
            Event::Rating(r) => r.occurred_at,
        }
    }
}

/// Which ownership claim decided a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRef {
    /// File name relative to the ownership directory, e.g. `payments.toml`.
    pub file: String,
    /// 0-based index of the `[[claim]]` in that file.
    pub index: i32,
}

/// Kafka coordinates of a record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceRef {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// An event with its team (`schemas/attributed.avsc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributedEvent {
    pub event: Event,
    pub team: String,
    pub attribution: Attribution,
    pub claim: Option<ClaimRef>,
    pub ownership_version: String,
    pub orphan: bool,
    pub interaction_kind: Option<String>,
    pub source: SourceRef,
    /// Wall-clock time of the decision, UTC milliseconds.
    pub attributed_at: i64,
}

/// The team name used when nothing claims an event.
pub const UNOWNED: &str = "unowned";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_serde_uses_the_lower_case_name_and_refuses_others() {
        for m in Metric::ALL {
            let json = serde_json::to_string(m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(serde_json::from_str::<Metric>(&json).unwrap(), *m);
        }
        let e = serde_json::from_str::<Metric>("\"CSAT\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown metric \"CSAT\"; expected one of csat, nps, ces"),
            "{e}"
        );
        assert_eq!(Metric::Csat.label(), "CSAT");
        assert_eq!(Metric::Nps.label(), "NPS");
        assert_eq!(Metric::Ces.label(), "CES");
    }

    #[test]
    fn thresholds_split_each_score_range() {
        for m in Metric::ALL {
            let (lo, hi) = m.score_range();
            assert!(lo <= m.negative_to() && m.negative_to() < m.positive_from());
            assert!(m.positive_from() <= hi);
        }
        let csat: Vec<(bool, bool)> = (1..=5)
            .map(|s| (Metric::Csat.is_positive(s), Metric::Csat.is_negative(s)))
            .collect();
        assert_eq!(
            csat,
            [
                (false, true),
                (false, true),
                (false, false),
                (true, false),
                (true, false)
            ]
        );
        assert!(Metric::Nps.is_positive(9) && !Metric::Nps.is_positive(8));
        assert!(Metric::Nps.is_negative(6) && !Metric::Nps.is_negative(7));
        assert!(Metric::Ces.is_positive(5) && Metric::Ces.is_negative(3));
        assert!(!Metric::Ces.is_positive(4) && !Metric::Ces.is_negative(4));
    }

    #[test]
    fn values() {
        assert_eq!(Metric::Csat.value(4, 14, 2, 1), Some(50.0));
        assert_eq!(Metric::Nps.value(6, 40, 2, 2), Some(0.0));
        assert_eq!(Metric::Nps.value(4, 30, 3, 1), Some(50.0));
        assert_eq!(Metric::Ces.value(4, 22, 2, 1), Some(5.5));
        assert_eq!(Metric::Ces.value(0, 0, 0, 0), None);
    }
}
