//! Collector API keys: one or more per producing service, kept in a file as SHA-256 hashes.
//!
//! File format (`--api-keys FILE` / `FEEDBACK_COLLECTOR_API_KEYS`), one key per line,
//! `#` starts a comment:
//!
//! ```text
//! # service   hash of the key (printed by `feedback collector keygen --service checkout`)
//! checkout    sha256:6b1d...
//! ```
//!
//! Keys are 256 random bits from the operating system's generator, so a plain SHA-256 is
//! enough to store them: nobody can brute-force the preimage of a random 256-bit value, and
//! a slow password hash (argon2, bcrypt) would only add latency to every request. A
//! presented key is hashed and compared with every stored hash in constant time
//! (`subtle`), so the time taken does not depend on how much of a hash matched.

use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The prefix of every key, so a leaked key is easy to recognise (secret scanners).
pub const KEY_PREFIX: &str = "fbk_";

/// The configured keys: `(service, sha256(key))`.
#[derive(Clone)]
pub struct ApiKeys {
    entries: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.entries.len())
    }
}

/// Why a request was not authenticated. The messages name no key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed,
    Unknown,
}

impl AuthError {
    /// Metric label value.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Unknown => "unknown",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "missing API key: send `Authorization: Bearer <key>`; keys are made with `feedback collector keygen --service <name>` and configured with --api-keys",
            AuthError::Malformed => "malformed Authorization header: expected `Authorization: Bearer <key>` with a key that starts with fbk_",
            AuthError::Unknown => "unknown API key: it is not in the collector's keys file (revoked, mistyped, or meant for another environment); ask for a key with `feedback collector keygen --service <name>`",
        }
    }
}

pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A new key for `service`: the key (shown once) and the line for the keys file.
pub fn generate(service: &str) -> anyhow::Result<(String, String)> {
    if !valid_service(service) {
        bail!(
            "service name {service:?} must be 1-64 characters of letters, digits, '.', '_' or '-'"
        );
    }
    use rand::TryRngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system's random generator failed: {e}"))?;
    let key = format!("{KEY_PREFIX}{}", hex(&bytes));
    let line = format!("{service} sha256:{}", hex(&hash(&key)));
    Ok((key, line))
}

fn valid_service(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl ApiKeys {
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        let mut entries = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = || format!("{origin} line {}", n + 1);
            let mut parts = line.split_whitespace();
            let (Some(service), Some(h), None) = (parts.next(), parts.next(), parts.next()) else {
                bail!("{}: expected `<service> sha256:<64 hex digits>` (the line `feedback collector keygen` prints)", at());
            };
            if !valid_service(service) {
                bail!(
                    "{}: service name {service:?} must be letters, digits, '.', '_' or '-'",
                    at()
                );
            }
            if h.starts_with(KEY_PREFIX) {
                bail!("{}: this is a key, not its hash; the file holds `sha256:...` hashes only (see `feedback collector keygen`). Treat that key as leaked and make a new one", at());
            }
            let Some(digest) = h.strip_prefix("sha256:").and_then(unhex) else {
                bail!(
                    "{}: the hash must be `sha256:` followed by 64 hex digits",
                    at()
                );
            };
            entries.push((service.to_string(), digest));
        }
        if entries.is_empty() {
            bail!("{origin} has no keys; add lines made with `feedback collector keygen --service <name>`");
        }
        Ok(ApiKeys { entries })
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the API keys file {} (--api-keys / FEEDBACK_COLLECTOR_API_KEYS)",
                path.display()
            )
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The service whose key is in `authorization` (the header's value), compared in
    /// constant time with every stored hash.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<&str, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| AuthError::Malformed)?;
        let (scheme, key) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let key = key.trim();
        if !key.starts_with(KEY_PREFIX) {
            return Err(AuthError::Malformed);
        }
        let presented = hash(key);
        let mut found: Option<&str> = None;
        for (service, stored) in &self.entries {
            // No early exit: every entry is compared.
            if bool::from(stored.ct_eq(&presented)) {
                found = Some(service);
            }
        }
        found.ok_or(AuthError::Unknown)
    }
}

/// The keys a collector client sends (`--api-key` / `FEEDBACK_API_KEY`): one key for every
/// request, or `service=key,service=key,...` so that each event goes with its own service's
/// key (a load generator emitting as several services). Never printed.
#[derive(Clone, Default)]
pub struct ClientKeys {
    single: Option<reqwest::header::HeaderValue>,
    by_service: std::collections::BTreeMap<String, reqwest::header::HeaderValue>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClientKeys(single: {}, services: {:?})",
            self.single.is_some(),
            self.by_service.keys().collect::<Vec<_>>()
        )
    }
}

fn bearer(key: &str) -> anyhow::Result<reqwest::header::HeaderValue> {
    let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
        anyhow::anyhow!("an API key (--api-key / FEEDBACK_API_KEY) contains characters not allowed in an HTTP header; copy it again from `feedback collector keygen`")
    })?;
    v.set_sensitive(true);
    Ok(v)
}

impl ClientKeys {
    pub fn parse(spec: Option<&str>) -> anyhow::Result<Self> {
        let mut keys = ClientKeys::default();
        let Some(spec) = spec.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(keys);
        };
        if !spec.contains('=') {
            keys.single = Some(bearer(spec)?);
            return Ok(keys);
        }
        for (n, part) in spec
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let Some((service, key)) = part.split_once('=') else {
                bail!("--api-key / FEEDBACK_API_KEY entry {} is not `service=key`; give one key, or `service=key` pairs separated by commas", n + 1);
            };
            keys.by_service
                .insert(service.trim().to_string(), bearer(key)?);
        }
        Ok(keys)
    }

    /// The Authorization header for an event of `service`: its own key when keys are per
    /// service (none if that service has no key), else the single key.
    pub fn header(&self, service: &str) -> Option<&reqwest::header::HeaderValue> {
        if self.by_service.is_empty() {
            self.single.as_ref()
        } else {
            self.by_service.get(service)
        }
    }

    pub fn per_service(&self) -> bool {
        !self.by_service.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_authenticates_as_its_service() {
        let (key, line) = generate("checkout").unwrap();
        assert!(key.starts_with("fbk_") && key.len() == 4 + 64);
        assert!(
            !line.contains(&key[4..]),
            "the file line must not contain the key"
        );
        let (other, other_line) = generate("billing").unwrap();
        let keys = ApiKeys::parse(
            &format!("# comment\n{line}\n\n{other_line}  # rotation\n"),
            "test",
        )
        .unwrap();
        assert_eq!(keys.len(), 2);
        let h = format!("Bearer {key}");
        assert_eq!(keys.authenticate(Some(h.as_bytes())), Ok("checkout"));
        let h = format!("bearer {other}");
        assert_eq!(keys.authenticate(Some(h.as_bytes())), Ok("billing"));
        assert_eq!(keys.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            keys.authenticate(Some(b"Basic abc")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            keys.authenticate(Some(format!("Bearer {}", &key[4..]).as_bytes())),
            Err(AuthError::Malformed)
        );
        let wrong = format!("Bearer fbk_{}", "0".repeat(64));
        assert_eq!(
            keys.authenticate(Some(wrong.as_bytes())),
            Err(AuthError::Unknown)
        );
    }

    #[test]
    fn file_errors_say_where_and_what() {
        let e = ApiKeys::parse("checkout\n", "keys.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keys.txt line 1"), "{e}");
        let (key, _) = generate("x").unwrap();
        let e = ApiKeys::parse(&format!("x {key}\n"), "keys.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not its hash") && !e.contains(&key), "{e}");
        let e = ApiKeys::parse("x sha256:abc\n", "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        assert!(ApiKeys::parse("# none\n", "k").is_err());
        assert!(generate("bad name").is_err());
    }

    #[test]
    fn client_keys_single_or_per_service() {
        let one = ClientKeys::parse(Some("fbk_1")).unwrap();
        assert_eq!(one.header("anything").unwrap(), "Bearer fbk_1");
        assert!(!one.per_service());
        let many = ClientKeys::parse(Some("survey=fbk_2, checkout-api=fbk_3")).unwrap();
        assert_eq!(many.header("survey").unwrap(), "Bearer fbk_2");
        assert_eq!(many.header("checkout-api").unwrap(), "Bearer fbk_3");
        assert!(many.header("billing").is_none());
        assert!(!format!("{many:?}").contains("fbk_"));
        assert!(ClientKeys::parse(None).unwrap().header("x").is_none());
        assert!(ClientKeys::parse(Some("a=fbk_1,oops")).is_err());
    }

    #[test]
    fn sha256_of_a_known_value() {
        // Independent value: `printf fbk_test | sha256sum`.
        assert_eq!(
            hex(&hash("fbk_test")),
            "71dae33ea5e2d5023f4f3cb90e95295d3ca5c33e833808992b3c04652daa5b2f"
        );
    }
}
