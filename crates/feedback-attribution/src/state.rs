//! The changelog encoding of the engine's state: one record per key, the latest wins
//! (a compacted topic keeps exactly that).
//!
//! Keys: `i:<interaction_id>` (an interaction seen within the horizon, with the decision
//! ratings will inherit) and `r:<rating_id>` (a rating seen within the horizon: done, or
//! parked waiting for its interaction, then carrying the whole rating).
//!
//! Values start with a format byte so the layout can evolve:
//! `1` interaction: i64 occurred_at, str team, str version, str kind, u8 has_claim
//!   [str file, i32 index]; `2` rating done: i64 occurred_at; `3` rating parked: i64
//!   occurred_at, str source topic, i32 partition, i64 offset, then the rating as an Avro
//!   single-object (the same bytes as on the ratings topic). Integers are little-endian,
//!   strings u32 length + UTF-8.

use feedback_events::codec::{decode, Decoded};
use feedback_events::{Encoded, Rating, SourceRef};

/// One decoded changelog value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Interaction {
        occurred_at: i64,
        team: String,
        version: String,
        kind: String,
        claim: Option<(String, i32)>,
    },
    RatingDone {
        occurred_at: i64,
    },
    RatingParked {
        occurred_at: i64,
        source: SourceRef,
        rating: Box<Rating>,
    },
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Entry::Interaction {
                occurred_at,
                team,
                version,
                kind,
                claim,
            } => {
                out.push(1);
                out.extend_from_slice(&occurred_at.to_le_bytes());
                put_str(&mut out, team);
                put_str(&mut out, version);
                put_str(&mut out, kind);
                match claim {
                    None => out.push(0),
                    Some((file, index)) => {
                        out.push(1);
                        put_str(&mut out, file);
                        out.extend_from_slice(&index.to_le_bytes());
                    }
                }
            }
            Entry::RatingDone { occurred_at } => {
                out.push(2);
                out.extend_from_slice(&occurred_at.to_le_bytes());
            }
            Entry::RatingParked {
                occurred_at,
                source,
                rating,
            } => {
                out.push(3);
                out.extend_from_slice(&occurred_at.to_le_bytes());
                put_str(&mut out, &source.topic);
                out.extend_from_slice(&source.partition.to_le_bytes());
                out.extend_from_slice(&source.offset.to_le_bytes());
                rating.encode_into(&mut out);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry, StateError> {
        let mut r = Reader { b: bytes, at: 0 };
        let tag = r.take(1)?[0];
        let occurred_at = r.i64()?;
        let e = match tag {
            1 => {
                let team = r.str()?;
                let version = r.str()?;
                let kind = r.str()?;
                let claim = match r.take(1)?[0] {
                    0 => None,
                    _ => {
                        let file = r.str()?;
                        Some((file, r.i32()?))
                    }
                };
                Entry::Interaction {
                    occurred_at,
                    team,
                    version,
                    kind,
                    claim,
                }
            }
            2 => Entry::RatingDone { occurred_at },
            3 => {
                let topic = r.str()?;
                let partition = r.i32()?;
                let offset = r.i64()?;
                let rest = &bytes[r.at..];
                r.at = bytes.len();
                match decode(rest) {
                    Ok(Decoded::Rating(rating)) => Entry::RatingParked {
                        occurred_at,
                        source: SourceRef {
                            topic,
                            partition,
                            offset,
                        },
                        rating: Box::new(rating),
                    },
                    Ok(_) => return Err(StateError::ParkedNotARating),
                    Err(e) => return Err(StateError::ParkedUndecodable(e)),
                }
            }
            t => return Err(StateError::UnknownFormat(t)),
        };
        if r.at != bytes.len() {
            return Err(StateError::Trailing(bytes.len() - r.at));
        }
        Ok(e)
    }
}

/// A changelog record that is not a state entry this version writes.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state entry truncated at byte {0}")]
    Truncated(usize),
    #[error("state entry string is not UTF-8 at byte {0}")]
    NotUtf8(usize),
    #[error("unknown state entry format {0}")]
    UnknownFormat(u8),
    #[error("{0} trailing bytes after the state entry")]
    Trailing(usize),
    #[error("parked entry holds another record type")]
    ParkedNotARating,
    #[error("parked rating does not decode: {0}")]
    ParkedUndecodable(feedback_events::codec::DecodeError),
    #[error("state key {key:?} has no kind prefix")]
    NoKindPrefix { key: String },
    #[error("state key {key:?} ({kind}) holds {entry}")]
    Mismatch {
        key: String,
        kind: String,
        entry: String,
    },
    #[error("state key {key:?}: {error}")]
    Entry { key: String, error: Box<StateError> },
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(StateError::Truncated(self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn i64(&mut self) -> Result<i64, StateError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn i32(&mut self) -> Result<i32, StateError> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn str(&mut self) -> Result<String, StateError> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().unwrap_or([0; 4])) as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| StateError::NotUtf8(self.at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use feedback_events::{Channel, Metric};

    #[test]
    fn entries_round_trip_and_truncation_is_an_error() {
        let rating = Rating {
            rating_id: "r1".into(),
            occurred_at: 42,
            interaction_id: Some("i1".into()),
            metric: Metric::Nps,
            score: 9,
            comment: Some("ok ✓".into()),
            service: "survey".into(),
            channel: Channel::Email,
            customer_ref: "c".into(),
            product: None,
            region: Some("nl".into()),
            attributes: Default::default(),
        };
        let all = [
            Entry::Interaction {
                occurred_at: -5,
                team: "payments".into(),
                version: "sha256:00".into(),
                kind: "order".into(),
                claim: Some(("payments.toml".into(), 2)),
            },
            Entry::Interaction {
                occurred_at: 7,
                team: "unowned".into(),
                version: "v".into(),
                kind: "call".into(),
                claim: None,
            },
            Entry::RatingDone { occurred_at: 9 },
            Entry::RatingParked {
                occurred_at: 42,
                source: SourceRef {
                    topic: "t".into(),
                    partition: 3,
                    offset: 99,
                },
                rating: Box::new(rating),
            },
        ];
        for e in all {
            let b = e.encode();
            assert_eq!(Entry::decode(&b).unwrap(), e);
            for cut in 0..b.len() {
                assert!(Entry::decode(&b[..cut]).is_err(), "{e:?} cut at {cut}");
            }
        }
        assert_eq!(
            Entry::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0])
                .unwrap_err()
                .to_string(),
            "unknown state entry format 9"
        );
    }
}
