//! Openness with optional per-team comment tokens.
//!
//! Every page and every number is readable by anyone. A team listed in the access file has
//! its comments shown only to requests bearing its token (`?token=` or
//! `Authorization: Bearer`); the file stores only the token's SHA-256:
//!
//! ```toml
//! [comment_tokens]
//! payments = "sha256:<64 hex digits of sha256(token)>"   # printf %s 'TOKEN' | sha256sum
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommentAccess {
    /// The team's comments are open to everyone.
    Open,
    /// Restricted, and the request bore the team's token.
    Granted,
    /// Restricted, and the request bore no token.
    Restricted,
    /// Restricted, and the request bore a wrong token.
    Refused,
}

impl CommentAccess {
    pub fn allowed(self) -> bool {
        matches!(self, CommentAccess::Open | CommentAccess::Granted)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Access {
    /// team → sha256 digest of its token.
    hashes: BTreeMap<String, [u8; 32]>,
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    comment_tokens: BTreeMap<String, String>,
}

/// An access file the board cannot use.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read access file {}: {error}; check --access-file (FEEDBACK_BOARD_ACCESS_FILE)", path.display())]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("access file {}: {error}; expected a [comment_tokens] table of team = \"sha256:<hex>\"", path.display())]
    Syntax {
        path: std::path::PathBuf,
        error: toml::de::Error,
    },
    #[error("access file {}: [comment_tokens] names team {team:?}, which has no ownership file; known teams: {known}", path.display())]
    UnknownTeam {
        path: std::path::PathBuf,
        team: String,
        known: String,
    },
    #[error("access file {}: the token of team {team:?} must be \"sha256:\" followed by 64 hex digits (make one with: printf %s 'TOKEN' | sha256sum); tokens are never stored in clear", path.display())]
    BadToken {
        path: std::path::PathBuf,
        team: String,
    },
}

impl Access {
    /// Parses the access file; `known` are the teams of the ownership files.
    pub fn parse(path: &Path, text: &str, known: &[String]) -> Result<Access, AccessError> {
        let f: File = toml::from_str(text).map_err(|error| AccessError::Syntax {
            path: path.to_path_buf(),
            error,
        })?;
        let mut hashes = BTreeMap::new();
        for (team, v) in f.comment_tokens {
            if !known.contains(&team) {
                return Err(AccessError::UnknownTeam {
                    path: path.to_path_buf(),
                    team,
                    known: known.join(", "),
                });
            }
            let hex = v.strip_prefix("sha256:").unwrap_or("");
            let Some(h) = parse_hex(&hex.to_ascii_lowercase()) else {
                return Err(AccessError::BadToken {
                    path: path.to_path_buf(),
                    team,
                });
            };
            hashes.insert(team, h);
        }
        Ok(Access { hashes })
    }

    pub fn load(path: &Path, known: &[String]) -> Result<Access, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|error| AccessError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Access::parse(path, &text, known)
    }

    pub fn check(&self, team: &str, token: Option<&str>) -> CommentAccess {
        let Some(expected) = self.hashes.get(team) else {
            return CommentAccess::Open;
        };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return CommentAccess::Restricted;
        };
        let got = Sha256::digest(token.as_bytes());
        // Constant-time comparison of the digests.
        let diff = got
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            CommentAccess::Granted
        } else {
            CommentAccess::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_open_granted_restricted_refused() {
        // sha256("s3cret"), computed with sha256sum.
        let text = "[comment_tokens]\npayments = \"sha256:1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0\"\n";
        let known = vec!["payments".to_string(), "billing".to_string()];
        let a = Access::parse(Path::new("access.toml"), text, &known).unwrap();
        assert_eq!(a.check("billing", None), CommentAccess::Open);
        assert_eq!(a.check("payments", None), CommentAccess::Restricted);
        assert_eq!(a.check("payments", Some("s3cret")), CommentAccess::Granted);
        assert_eq!(a.check("payments", Some("S3cret")), CommentAccess::Refused);
    }

    #[test]
    fn bad_files_say_what_to_do() {
        let known = vec!["payments".to_string()];
        let e = Access::parse(
            Path::new("a.toml"),
            "[comment_tokens]\nnobody = \"sha256:00\"\n",
            &known,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"nobody\"") && e.contains("known teams: payments"),
            "{e}"
        );
        let e = Access::parse(
            Path::new("a.toml"),
            "[comment_tokens]\npayments = \"s3cret\"\n",
            &known,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sha256sum"), "{e}");
    }
}
