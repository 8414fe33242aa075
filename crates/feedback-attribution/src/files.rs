//! `deploy/ownership/<team>.toml`: parsing, validation with file and line, matching.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use feedback_events::{Channel, ClaimRef, Interaction, Metric, Rating, UNOWNED};
use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    team: Spanned<String>,
    name: Option<String>,
    contact: Option<String>,
    #[serde(default)]
    claim: Vec<Spanned<RawClaim>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaim {
    service: Option<Spanned<OneOrMany>>,
    channel: Option<Spanned<OneOrMany>>,
    kind: Option<Spanned<OneOrMany>>,
    product: Option<Spanned<OneOrMany>>,
    region: Option<Spanned<OneOrMany>>,
    metric: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    priority: i32,
}

/// Any of a set of exact values or globs.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The patterns as written.
    pub patterns: Vec<String>,
    globs: Vec<Option<GlobMatcher>>,
}

impl Matcher {
    fn new(patterns: Vec<String>) -> Result<Self, String> {
        let mut globs = Vec::with_capacity(patterns.len());
        for p in &patterns {
            if p.contains(['*', '?', '[', '{']) {
                let g = Glob::new(p).map_err(|e| format!("invalid glob {p:?}: {e}"))?;
                globs.push(Some(g.compile_matcher()));
            } else {
                globs.push(None);
            }
        }
        Ok(Matcher { patterns, globs })
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.patterns.iter().zip(&self.globs).any(|(p, g)| match g {
            None => p == value,
            Some(g) => g.is_match(value),
        })
    }

    /// Whether some value could match both: a shared value, one side's literal matched by
    /// the other's glob, or two globs whose literal prefixes are compatible.
    fn may_overlap(&self, other: &Matcher) -> bool {
        self.patterns.iter().zip(&self.globs).any(|(p, g)| {
            other
                .patterns
                .iter()
                .zip(&other.globs)
                .any(|(q, h)| match (g, h) {
                    (None, None) => p == q,
                    (Some(g), None) => g.is_match(q),
                    (None, Some(h)) => h.is_match(p),
                    (Some(_), Some(_)) => {
                        let (a, b) = (literal_prefix(p), literal_prefix(q));
                        a.starts_with(b) || b.starts_with(a)
                    }
                })
        })
    }
}

fn literal_prefix(glob: &str) -> &str {
    &glob[..glob.find(['*', '?', '[', '{']).unwrap_or(glob.len())]
}

/// Validates one value of an enum-typed claim field.
type EnumCheck = fn(&str) -> Result<(), feedback_events::UnknownSymbol>;

/// The fields a claim can match on.
pub const CLAIM_FIELDS: &[&str] = &["service", "channel", "kind", "product", "region", "metric"];

/// One `[[claim]]`.
#[derive(Debug, Clone)]
pub struct Claim {
    pub team: String,
    pub file: String,
    pub index: usize,
    pub line: usize,
    pub priority: i32,
    /// Field name → matcher, only for fields the claim names.
    pub fields: BTreeMap<&'static str, Matcher>,
}

/// The fields of an event that claims look at.
pub struct Subject<'a> {
    pub service: &'a str,
    pub channel: Channel,
    pub kind: Option<&'a str>,
    pub product: Option<&'a str>,
    pub region: Option<&'a str>,
    pub metric: Option<Metric>,
}

impl<'a> From<&'a Interaction> for Subject<'a> {
    fn from(i: &'a Interaction) -> Self {
        Subject {
            service: &i.service,
            channel: i.channel,
            kind: Some(&i.kind),
            product: i.product.as_deref(),
            region: i.region.as_deref(),
            metric: None,
        }
    }
}

impl<'a> From<&'a Rating> for Subject<'a> {
    fn from(r: &'a Rating) -> Self {
        Subject {
            service: &r.service,
            channel: r.channel,
            kind: None,
            product: r.product.as_deref(),
            region: r.region.as_deref(),
            metric: Some(r.metric),
        }
    }
}

impl Claim {
    /// An event matches when every field the claim names matches; a field the event lacks
    /// never matches.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        self.fields.iter().all(|(field, m)| {
            let v = match *field {
                "service" => Some(s.service),
                "channel" => Some(s.channel.as_str()),
                "kind" => s.kind,
                "product" => s.product,
                "region" => s.region,
                "metric" => s.metric.map(Metric::as_str),
                _ => None,
            };
            v.is_some_and(|v| m.is_match(v))
        })
    }

    pub fn claim_ref(&self) -> ClaimRef {
        ClaimRef {
            file: self.file.clone(),
            index: self.index as i32,
        }
    }
}

/// One team's file.
#[derive(Debug, Clone)]
pub struct Team {
    pub team: String,
    pub name: String,
    pub contact: Option<String>,
    pub file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// A finding of `feedback ownership check`, pointing at file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}: {sev}: {}", self.file, self.line, self.message)
    }
}

/// The set of ownership files in force.
#[derive(Debug, Clone, Default)]
pub struct Ownership {
    pub teams: Vec<Team>,
    /// All claims, highest priority first, then by file and index (the deterministic order
    /// used to break ties).
    pub claims: Vec<Claim>,
    /// `sha256:` + first 16 hex digits over the sorted file names and contents.
    pub version: String,
    /// Everything found while loading; a set with errors is refused by [`Ownership::load_dir`].
    pub diagnostics: Vec<Diagnostic>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// An ownership directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("cannot read ownership directory {}: {error}; point --ownership-dir (FEEDBACK_OWNERSHIP_DIR) at the folder of <team>.toml files", dir.display())]
    ReadDir { dir: PathBuf, error: std::io::Error },
    #[error("cannot read {}: {error}", path.display())]
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no ownership files (*.toml) in {}", dir.display())]
    NoFiles { dir: PathBuf },
    #[error(
        "ownership files in {} have {} error(s); run `feedback ownership check`:\n{}",
        dir.display(),
        errors.len(),
        errors.join("\n")
    )]
    Invalid { dir: PathBuf, errors: Vec<String> },
}

impl Ownership {
    /// The (file name, contents) of every `*.toml` in `dir`, sorted by name.
    pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, OwnershipError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|error| OwnershipError::ReadDir {
                dir: dir.to_path_buf(),
                error,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut files = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|error| OwnershipError::ReadFile {
                path: p.clone(),
                error,
            })?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, text));
        }
        Ok(files)
    }

    /// Reads every `*.toml` in `dir`. Errors name the file and line; a directory with
    /// errors or no files is refused.
    pub fn load_dir(dir: &Path) -> Result<Ownership, OwnershipError> {
        let files = Ownership::read_dir(dir)?;
        if files.is_empty() {
            return Err(OwnershipError::NoFiles {
                dir: dir.to_path_buf(),
            });
        }
        let o = Ownership::from_files(&files);
        let errors: Vec<String> = o
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect();
        if errors.is_empty() {
            Ok(o)
        } else {
            Err(OwnershipError::Invalid {
                dir: dir.to_path_buf(),
                errors,
            })
        }
    }

    /// Builds the set from (file name, contents) pairs, collecting every diagnostic.
    pub fn from_files(files: &[(String, String)]) -> Ownership {
        let mut o = Ownership::default();
        let mut hasher = Sha256::new();
        let mut sorted: Vec<&(String, String)> = files.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, text) in &sorted {
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
            o.load_file(name, text);
        }
        let digest = hasher.finalize();
        o.version = format!(
            "sha256:{}",
            digest
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        o.claims.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.file.cmp(&b.file))
                .then(a.index.cmp(&b.index))
        });
        o.check_conflicts();
        o
    }

    fn diag(&mut self, severity: Severity, file: &str, line: usize, message: String) {
        self.diagnostics.push(Diagnostic {
            severity,
            file: file.to_string(),
            line,
            message,
        });
    }

    fn load_file(&mut self, file: &str, text: &str) {
        let raw: RawFile = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
                let msg = e.message().to_string();
                self.diag(Severity::Error, file, line, msg);
                return;
            }
        };
        let team = raw.team.get_ref().clone();
        let team_line = line_of(text, raw.team.span().start);
        if team.is_empty()
            || !team
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            self.diag(
                Severity::Error,
                file,
                team_line,
                format!("team {team:?} must be lower-case letters, digits, - or _"),
            );
            return;
        }
        if team == UNOWNED {
            self.diag(
                Severity::Error,
                file,
                team_line,
                format!("team name {UNOWNED:?} is reserved"),
            );
            return;
        }
        if let Some(other) = self.teams.iter().find(|t| t.team == team) {
            let msg = format!("team {team:?} is already defined in {}", other.file);
            self.diag(Severity::Error, file, team_line, msg);
            return;
        }
        if file.strip_suffix(".toml") != Some(team.as_str()) {
            self.diag(
                Severity::Warning,
                file,
                team_line,
                format!("file of team {team:?} should be named {team}.toml"),
            );
        }
        self.teams.push(Team {
            team: team.clone(),
            name: raw.name.unwrap_or_else(|| team.clone()),
            contact: raw.contact,
            file: file.to_string(),
        });
        if raw.claim.is_empty() {
            self.diag(
                Severity::Warning,
                file,
                team_line,
                "the team has no [[claim]]; only events naming it explicitly reach it".into(),
            );
        }
        for (index, c) in raw.claim.into_iter().enumerate() {
            let line = line_of(text, c.span().start);
            let c = c.into_inner();
            let mut fields = BTreeMap::new();
            let errors_before = self.diagnostics.len();
            let named = [
                ("service", c.service),
                ("channel", c.channel),
                ("kind", c.kind),
                ("product", c.product),
                ("region", c.region),
                ("metric", c.metric),
            ];
            for (field, value) in named {
                let Some(value) = value else { continue };
                let vline = line_of(text, value.span().start);
                let values = value.into_inner().into_vec();
                if values.is_empty() || values.iter().any(|v| v.is_empty()) {
                    self.diag(
                        Severity::Error,
                        file,
                        vline,
                        format!("claim {index}: `{field}` must not be empty"),
                    );
                    continue;
                }
                let check_enum: Option<EnumCheck> = match field {
                    "channel" => Some(|v| v.parse::<Channel>().map(|_| ())),
                    "metric" => Some(|v| v.parse::<Metric>().map(|_| ())),
                    _ => None,
                };
                if let Some(check) = check_enum {
                    let bad: Vec<String> = values
                        .iter()
                        .filter_map(|v| check(v).err().map(|e| e.to_string()))
                        .collect();
                    if !bad.is_empty() {
                        self.diag(
                            Severity::Error,
                            file,
                            vline,
                            format!("claim {index}: {}", bad.join("; ")),
                        );
                        continue;
                    }
                }
                match Matcher::new(values) {
                    Ok(m) => {
                        fields.insert(field, m);
                    }
                    Err(e) => self.diag(
                        Severity::Error,
                        file,
                        vline,
                        format!("claim {index}: `{field}`: {e}"),
                    ),
                }
            }
            if self.diagnostics.len() > errors_before {
                // The field's own error was reported; a claim with a broken field is left out.
                continue;
            }
            if fields.is_empty() {
                self.diag(
                    Severity::Error,
                    file,
                    line,
                    format!(
                        "claim {index} names no field; give at least one of {}",
                        CLAIM_FIELDS.join(", ")
                    ),
                );
                continue;
            }
            self.claims.push(Claim {
                team: team.clone(),
                file: file.to_string(),
                index,
                line,
                priority: c.priority,
                fields,
            });
        }
    }

    fn check_conflicts(&mut self) {
        let mut found = Vec::new();
        for (i, a) in self.claims.iter().enumerate() {
            for b in &self.claims[i + 1..] {
                if a.team == b.team || a.priority != b.priority {
                    continue;
                }
                // Claims on the same fields whose values overlap certainly compete. Claims on
                // different fields compete only for events that carry both combinations;
                // that needs sample events to prove and is not reported here.
                let same_fields = a.fields.keys().eq(b.fields.keys());
                let overlap = same_fields
                    && a.fields
                        .iter()
                        .all(|(f, m)| b.fields.get(f).is_some_and(|n| m.may_overlap(n)));
                if overlap {
                    found.push(Diagnostic {
                        severity: Severity::Error,
                        file: b.file.clone(),
                        line: b.line,
                        message: format!(
                            "claim {} of team {:?} and claim {} of team {:?} ({}:{}) can match the same events at equal priority {}; give one a higher priority or narrow it",
                            b.index, b.team, a.index, a.team, a.file, a.line, a.priority
                        ),
                    });
                }
            }
        }
        self.diagnostics.extend(found);
    }

    pub fn team(&self, name: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.team == name)
    }

    /// The best claim for a subject: highest priority, ties broken by file then index.
    pub fn best_claim(&self, s: &Subject<'_>) -> Option<&Claim> {
        self.claims.iter().find(|c| c.matches(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Ownership {
        Ownership::from_files(
            &list
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn errors_point_at_file_and_line() {
        let o = files(&[(
            "payments.toml",
            "team = \"payments\"\n\n[[claim]]\nservice = \"x\"\nchannel = [\"web\", \"fax\"]\n\n[[claim]]\npriority = 3\n\n[[claim]]\nservise = \"typo\"\n",
        )]);
        let d: Vec<String> = o.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].starts_with("payments.toml:11: error: unknown field `servise`"),
            "{d:?}"
        );
        // Parsing stops at the first syntax-level error, so the semantic errors show once it is fixed.
        let o = files(&[("payments.toml", "team = \"payments\"\n\n[[claim]]\nservice = \"x\"\nchannel = [\"web\", \"fax\"]\n\n[[claim]]\npriority = 3\n")]);
        let d: Vec<String> = o.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            d,
            vec![
                "payments.toml:5: error: claim 0: unknown channel \"fax\"; expected one of phone, chat, email, web, app, store, field, social, other".to_string(),
                "payments.toml:7: error: claim 1 names no field; give at least one of service, channel, kind, product, region, metric".to_string(),
            ]
        );
    }

    #[test]
    fn equal_priority_overlap_is_a_conflict_and_priority_resolves_it() {
        let a = "team = \"a\"\n[[claim]]\nservice = \"checkout-*\"\n";
        let b = "team = \"b\"\n[[claim]]\nservice = \"checkout-api\"\n";
        let o = files(&[("a.toml", a), ("b.toml", b)]);
        assert_eq!(o.diagnostics.len(), 1, "{:?}", o.diagnostics);
        assert!(o.diagnostics[0].message.contains("equal priority 0"));
        let b2 = "team = \"b\"\n[[claim]]\nservice = \"checkout-api\"\npriority = 5\n";
        let o = files(&[("a.toml", a), ("b.toml", b2)]);
        assert!(o.diagnostics.is_empty(), "{:?}", o.diagnostics);
        let c = "team = \"c\"\n[[claim]]\nservice = \"support-*\"\n";
        assert!(files(&[("a.toml", a), ("c.toml", c)])
            .diagnostics
            .is_empty());
    }

    #[test]
    fn version_changes_with_content_only() {
        let a = files(&[("a.toml", "team = \"a\"\n[[claim]]\nkind = \"x\"\n")]);
        let b = files(&[("a.toml", "team = \"a\"\n[[claim]]\nkind = \"x\"\n")]);
        let c = files(&[("a.toml", "team = \"a\"\n[[claim]]\nkind = \"y\"\n")]);
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert!(a.version.starts_with("sha256:") && a.version.len() == 23);
    }
}
