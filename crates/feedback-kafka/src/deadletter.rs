//! Dead letters on the dead-letter topic: the one definition of their headers, reason
//! codes and payload cap, used by the attributor and the sink to write them and by the sink
//! to read them back into ClickHouse `dead_letters`.
//!
//! A dead letter is a Kafka message whose payload is (at most [`PAYLOAD_CAP_BYTES`] of) the
//! message that could not be processed and whose headers say why ([`header`]).

use feedback_events::codec::DecodeError;
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Most bytes of a message kept in its dead letter: the rest is cut, and header
/// [`header::PAYLOAD_BYTES`] then gives the original size. A dead letter of any size
/// would be refused by the producer (librdkafka's 1,000,000-byte default) and stall the
/// partition; the sink's own row in ClickHouse keeps the whole payload.
pub const PAYLOAD_CAP_BYTES: usize = 64 * 1024;

/// Header names (a contract: external readers of the dead-letter topic use them).
pub mod header {
    /// Which component wrote the dead letter (`attributor`, `sink`).
    pub const COMPONENT: &str = "component";
    /// The reason code ([`super::Reason::as_str`]).
    pub const REASON: &str = "reason";
    /// The error text, for people.
    pub const ERROR: &str = "error";
    /// Topic of the message that was dead-lettered.
    pub const SOURCE_TOPIC: &str = "source_topic";
    /// Its partition (decimal).
    pub const SOURCE_PARTITION: &str = "source_partition";
    /// Its offset (decimal).
    pub const SOURCE_OFFSET: &str = "source_offset";
    /// The original payload size (decimal), present only when the payload was cut.
    pub const PAYLOAD_BYTES: &str = "payload_bytes";
    /// Set to [`LANDED_CLICKHOUSE`] by the sink on the dead letters it publishes itself:
    /// their row is already in `dead_letters`, so reading them back lands nothing.
    pub const LANDED: &str = "landed";
    /// The value of [`LANDED`].
    pub const LANDED_CLICKHOUSE: &str = "clickhouse";
}

/// Why a message was dead-lettered. The strings ([`Reason::as_str`]) are a contract: they
/// land in ClickHouse `dead_letters.reason`, label the `*_dead_letters_total` metrics, and
/// tests and dashboards match them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// [`DecodeError::TooShort`].
    TooShort,
    /// [`DecodeError::BadMarker`].
    BadMarker,
    /// [`DecodeError::UnknownFingerprint`].
    UnknownFingerprint,
    /// [`DecodeError::Truncated`].
    Truncated,
    /// [`DecodeError::VarintOverflow`].
    VarintOverflow,
    /// [`DecodeError::BadLength`].
    BadLength,
    /// [`DecodeError::InvalidUtf8`].
    InvalidUtf8,
    /// [`DecodeError::BadIndex`].
    BadIndex,
    /// [`DecodeError::BadValue`].
    BadValue,
    /// [`DecodeError::TrailingBytes`].
    TrailingBytes,
    /// A valid record of another type than the topic carries.
    WrongSchema,
    /// A message larger than the attributor accepts (`--max-message-bytes`).
    Oversized,
    /// An event that breaks the collector's field rules.
    InvalidEvent,
    /// Rows ClickHouse refused (incorrect data, type mismatch), isolated by the sink.
    ClickhouseRejected,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 14] = [
        Reason::TooShort,
        Reason::BadMarker,
        Reason::UnknownFingerprint,
        Reason::Truncated,
        Reason::VarintOverflow,
        Reason::BadLength,
        Reason::InvalidUtf8,
        Reason::BadIndex,
        Reason::BadValue,
        Reason::TrailingBytes,
        Reason::WrongSchema,
        Reason::Oversized,
        Reason::InvalidEvent,
        Reason::ClickhouseRejected,
    ];

    /// The reason code (bounded, stable).
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::TooShort => "too_short",
            Reason::BadMarker => "bad_marker",
            Reason::UnknownFingerprint => "unknown_fingerprint",
            Reason::Truncated => "truncated",
            Reason::VarintOverflow => "varint_overflow",
            Reason::BadLength => "bad_length",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::BadIndex => "bad_index",
            Reason::BadValue => "bad_value",
            Reason::TrailingBytes => "trailing_bytes",
            Reason::WrongSchema => "wrong_schema",
            Reason::Oversized => "oversized",
            Reason::InvalidEvent => "invalid_event",
            Reason::ClickhouseRejected => "clickhouse_rejected",
        }
    }

    /// The reason whose code is `code`, if any.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == code)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&DecodeError> for Reason {
    fn from(e: &DecodeError) -> Reason {
        match e {
            DecodeError::TooShort(_) => Reason::TooShort,
            DecodeError::BadMarker(..) => Reason::BadMarker,
            DecodeError::UnknownFingerprint(..) => Reason::UnknownFingerprint,
            DecodeError::Truncated(_) => Reason::Truncated,
            DecodeError::VarintOverflow(_) => Reason::VarintOverflow,
            DecodeError::BadLength(..) => Reason::BadLength,
            DecodeError::InvalidUtf8(_) => Reason::InvalidUtf8,
            DecodeError::BadIndex(..) => Reason::BadIndex,
            DecodeError::BadValue(..) => Reason::BadValue,
            DecodeError::TrailingBytes(_) => Reason::TrailingBytes,
        }
    }
}

/// The components that write dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Attributor,
    Sink,
}

impl Component {
    pub const fn as_str(self) -> &'static str {
        match self {
            Component::Attributor => "attributor",
            Component::Sink => "sink",
        }
    }
}

/// What a dead letter's headers say.
///
/// Written with a [`Component`] and a [`Reason`] ([`DeadLetter::new`]); read back
/// ([`DeadLetter::from_headers`]) as the strings the topic holds, whoever produced them,
/// so that ClickHouse records exactly what was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub component: String,
    pub reason: String,
    pub error: String,
    pub source_topic: String,
    /// `-1` when absent or not a number.
    pub source_partition: i32,
    /// `-1` when absent or not a number.
    pub source_offset: i64,
    /// Whether the sink already landed its row in ClickHouse ([`header::LANDED`]).
    pub landed: bool,
}

/// A dead letter ready to produce: key, payload (cut to [`PAYLOAD_CAP_BYTES`]), headers.
pub struct Outgoing<'a> {
    /// The message's key (cut to [`PAYLOAD_CAP_BYTES`]), or `None` to send none.
    pub key: Option<String>,
    pub payload: &'a [u8],
    pub headers: OwnedHeaders,
}

/// At most [`PAYLOAD_CAP_BYTES`] of `bytes`.
pub fn capped(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(PAYLOAD_CAP_BYTES)]
}

impl DeadLetter {
    /// A dead letter `component` writes about the message at `source` (topic, partition,
    /// offset).
    pub fn new(
        component: Component,
        reason: Reason,
        error: impl Into<String>,
        source: (&str, i32, i64),
    ) -> DeadLetter {
        DeadLetter {
            component: component.as_str().to_string(),
            reason: reason.as_str().to_string(),
            error: error.into(),
            source_topic: source.0.to_string(),
            source_partition: source.1,
            source_offset: source.2,
            landed: false,
        }
    }

    /// The headers of this dead letter for a payload of `payload_len` bytes
    /// ([`header::PAYLOAD_BYTES`] is added when that is more than the cap).
    pub fn to_headers(&self, payload_len: usize) -> OwnedHeaders {
        let partition = self.source_partition.to_string();
        let offset = self.source_offset.to_string();
        let mut h = OwnedHeaders::new();
        for (key, value) in [
            (header::COMPONENT, self.component.as_str()),
            (header::REASON, self.reason.as_str()),
            (header::ERROR, self.error.as_str()),
            (header::SOURCE_TOPIC, self.source_topic.as_str()),
            (header::SOURCE_PARTITION, partition.as_str()),
            (header::SOURCE_OFFSET, offset.as_str()),
        ] {
            h = h.insert(Header {
                key,
                value: Some(value),
            });
        }
        if self.landed {
            h = h.insert(Header {
                key: header::LANDED,
                value: Some(header::LANDED_CLICKHOUSE),
            });
        }
        if payload_len > PAYLOAD_CAP_BYTES {
            h = h.insert(Header {
                key: header::PAYLOAD_BYTES,
                value: Some(payload_len.to_string().as_str()),
            });
        }
        h
    }

    /// The message to produce for the dead-lettered message's `key` and `payload`: both cut
    /// to [`PAYLOAD_CAP_BYTES`] (the key as lossy UTF-8), so an oversized message cannot
    /// make the dead-letter write itself fail.
    pub fn to_message<'a>(&self, key: Option<&[u8]>, payload: &'a [u8]) -> Outgoing<'a> {
        Outgoing {
            key: key.map(|k| String::from_utf8_lossy(capped(k)).into_owned()),
            payload: capped(payload),
            headers: self.to_headers(payload.len()),
        }
    }

    /// Reads a dead letter's headers (the first value of each name). Absent headers read as
    /// empty strings, absent or malformed coordinates as `-1`; nothing is refused, so a
    /// dead letter from any producer still lands.
    pub fn from_headers<H: Headers>(headers: Option<&H>) -> DeadLetter {
        let get = |key: &str| -> Option<String> {
            headers.and_then(|h| {
                h.iter()
                    .find(|h| h.key == key)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let text = |key| get(key).unwrap_or_default();
        DeadLetter {
            component: text(header::COMPONENT),
            reason: text(header::REASON),
            error: text(header::ERROR),
            source_topic: text(header::SOURCE_TOPIC),
            source_partition: text(header::SOURCE_PARTITION).parse().unwrap_or(-1),
            source_offset: text(header::SOURCE_OFFSET).parse().unwrap_or(-1),
            landed: get(header::LANDED).as_deref() == Some(header::LANDED_CLICKHOUSE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of(h: &OwnedHeaders, key: &str) -> Option<String> {
        h.iter()
            .find(|x| x.key == key)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    #[test]
    fn every_reason_has_its_contract_string() {
        let got: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            got,
            [
                "too_short",
                "bad_marker",
                "unknown_fingerprint",
                "truncated",
                "varint_overflow",
                "bad_length",
                "invalid_utf8",
                "bad_index",
                "bad_value",
                "trailing_bytes",
                "wrong_schema",
                "oversized",
                "invalid_event",
                "clickhouse_rejected",
            ]
        );
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.as_str()), Some(r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(Reason::from_code("nonsense"), None);
    }

    #[test]
    fn decode_errors_map_to_the_reason_named_by_their_code() {
        let errors = [
            DecodeError::TooShort(3),
            DecodeError::BadMarker(1, 2),
            DecodeError::UnknownFingerprint("a".into(), "b".into()),
            DecodeError::Truncated("f"),
            DecodeError::VarintOverflow("f"),
            DecodeError::BadLength("f", -1),
            DecodeError::InvalidUtf8("f"),
            DecodeError::BadIndex("f", 9),
            DecodeError::BadValue("f", 9),
            DecodeError::TrailingBytes(1),
        ];
        assert_eq!(errors.len(), DecodeError::CODES.len());
        for e in &errors {
            assert_eq!(Reason::from(e).as_str(), e.code());
        }
    }

    #[test]
    fn headers_round_trip() {
        let mut d = DeadLetter::new(
            Component::Attributor,
            Reason::InvalidEvent,
            "event breaks the rules",
            ("feedback.ratings.v1", 3, 12345),
        );
        let h = d.to_headers(10);
        assert_eq!(value_of(&h, "component").as_deref(), Some("attributor"));
        assert_eq!(value_of(&h, "reason").as_deref(), Some("invalid_event"));
        assert_eq!(value_of(&h, "source_partition").as_deref(), Some("3"));
        assert_eq!(value_of(&h, "source_offset").as_deref(), Some("12345"));
        assert_eq!(value_of(&h, "landed"), None);
        assert_eq!(value_of(&h, "payload_bytes"), None);
        assert_eq!(DeadLetter::from_headers(Some(&h)), d);

        d.landed = true;
        d.component = Component::Sink.as_str().into();
        let h = d.to_headers(10);
        assert_eq!(value_of(&h, "landed").as_deref(), Some("clickhouse"));
        assert_eq!(DeadLetter::from_headers(Some(&h)), d);
    }

    #[test]
    fn foreign_or_missing_headers_still_read() {
        let none: Option<&OwnedHeaders> = None;
        assert_eq!(
            DeadLetter::from_headers(none),
            DeadLetter {
                component: String::new(),
                reason: String::new(),
                error: String::new(),
                source_topic: String::new(),
                source_partition: -1,
                source_offset: -1,
                landed: false,
            }
        );
        let h = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some("made_up_elsewhere"),
            })
            .insert(Header {
                key: "source_partition",
                value: Some("x"),
            })
            .insert(Header {
                key: "landed",
                value: Some("elsewhere"),
            });
        let d = DeadLetter::from_headers(Some(&h));
        assert_eq!(d.reason, "made_up_elsewhere");
        assert_eq!(d.source_partition, -1);
        assert!(!d.landed);
    }

    #[test]
    fn payload_and_key_are_cut_to_the_cap() {
        let d = DeadLetter::new(Component::Sink, Reason::BadMarker, "e", ("t", 0, 1));
        let big = vec![b'x'; PAYLOAD_CAP_BYTES + 1];
        let m = d.to_message(Some(&big), &big);
        assert_eq!(m.payload.len(), PAYLOAD_CAP_BYTES);
        assert_eq!(m.key.as_ref().map(|k| k.len()), Some(PAYLOAD_CAP_BYTES));
        assert_eq!(
            value_of(&m.headers, "payload_bytes").as_deref(),
            Some((PAYLOAD_CAP_BYTES + 1).to_string().as_str())
        );

        let exact = vec![b'y'; PAYLOAD_CAP_BYTES];
        let m = d.to_message(None, &exact);
        assert_eq!(m.payload, &exact[..]);
        assert_eq!(m.key, None);
        assert_eq!(value_of(&m.headers, "payload_bytes"), None);
        assert_eq!(PAYLOAD_CAP_BYTES, 65_536);
    }
}
