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
