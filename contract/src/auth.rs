//! Who may do what. Callers present a bearer token; the tokens file holds only each
//! token's SHA-256 (a token is 256 random bits, so a fast hash is the right one: there
//! is nothing to brute-force), and a presented token is hashed and compared with every
//! entry in constant time. Each token has one scope:
//!
//! - `station`: may post frames for the stations it names, and read those frames' results;
//! - `operator`: read-only — dashboard, live stream, history, counts, the review queue;
//! - `reviewer`: what an operator reads, plus reviewing the frames in the review
//!   queue (confirm, correct, reject: stored with the token's name as the reviewer);
//! - `admin`: everything, plus the self-test and the configuration.
//!
//! Authentication may only be off (no tokens file) on a loopback listener — the
//! embedded default — and then a warning is logged; see [`Auth::for_listener`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::valid_station_id;

/// What a token allows; ordered by reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Station,
    Operator,
    Reviewer,
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Station => "station",
            Scope::Operator => "operator",
            Scope::Reviewer => "reviewer",
            Scope::Admin => "admin",
        }
    }

    const ALL: [Scope; 4] = [Scope::Station, Scope::Operator, Scope::Reviewer, Scope::Admin];

    fn with_article(self) -> &'static str {
        match self {
            Scope::Station => "a station",
            Scope::Operator => "an operator",
            Scope::Reviewer => "a reviewer",
            Scope::Admin => "an admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    /// A scope by its name, as the tokens file writes it.
    fn from_str(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| format!("`{text}`: the scopes are station, operator, reviewer and admin"))
    }
}

/// The holder of a valid token.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The entry's name (for logs; never the token).
    pub name: String,
    pub scope: Scope,
    /// Stations a `station` token may post for.
    pub stations: Vec<String>,
}

impl Principal {
    pub fn may_post_for(&self, station: &str) -> bool {
        self.scope == Scope::Admin || (self.scope == Scope::Station && self.stations.iter().any(|s| s == station))
    }

    /// Operators, reviewers and admins read everything; a station reads its own frames.
    pub fn may_read_station(&self, station: &str) -> bool {
        self.scope >= Scope::Operator || self.stations.iter().any(|s| s == station)
    }
}

/// Why a request is refused: `Missing`/`Invalid` are 401, `Forbidden` 403.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Denied {
    #[error("this endpoint needs a token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the token is not valid")]
    Invalid,
    #[error("{0}")]
    Forbidden(String),
}

impl Denied {
    pub fn status(&self) -> u16 {
        match self {
            Denied::Missing | Denied::Invalid => 401,
            Denied::Forbidden(_) => 403,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Denied::Missing => "unauthenticated",
            Denied::Invalid => "invalid_token",
            Denied::Forbidden(_) => "forbidden",
        }
    }

    /// The `WWW-Authenticate` header of a 401 (RFC 6750).
    pub fn challenge(&self) -> Option<&'static str> {
        match self {
            Denied::Missing => Some("Bearer realm=\"visionq\""),
            Denied::Invalid => Some("Bearer realm=\"visionq\", error=\"invalid_token\""),
            Denied::Forbidden(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read tokens file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("tokens file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "no tokens file is configured (VISIONQ_TOKENS_FILE) and the HTTP side listens on {0}: \
         authentication may only be off on a loopback address. Create tokens with `visionq token new`."
    )]
    OpenOnNetwork(SocketAddr),
}

/// One line of the tokens file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stations: Vec<String>,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

struct Known {
    hash: [u8; 32],
    principal: Arc<Principal>,
}

/// The access check of one process: off, or a set of known tokens (swapped whole
/// by [`Auth::reload`]).
pub struct Auth {
    known: Option<RwLock<Arc<Vec<Known>>>>,
    /// Where the tokens came from, for reloads.
    file: Option<PathBuf>,
}

impl Auth {
    /// No authentication: every request passes.
    pub fn off() -> Auth {
        Auth { known: None, file: None }
    }

    /// The check for a process whose HTTP API listens on `listen`: the tokens file
    /// when one is configured; otherwise off, which only a loopback listener may be
    /// (with a warning).
    pub fn for_listener(tokens_file: Option<&Path>, listen: SocketAddr) -> Result<Auth, AuthError> {
        match tokens_file {
            Some(path) => Auth::load(path),
            None if listen.ip().is_loopback() => {
                tracing::warn!(
                    %listen,
                    "authentication is OFF: no tokens file (VISIONQ_TOKENS_FILE). Allowed only because \
                     the HTTP side listens on loopback; anyone on this machine can post frames and read results"
                );
                Ok(Auth::off())
            }
            None => Err(AuthError::OpenOnNetwork(listen)),
        }
    }

    pub fn load(path: &Path) -> Result<Auth, AuthError> {
        let known = read_tokens(path)?;
        tracing::info!(tokens = known.len(), file = %path.display(), "authentication on");
        Ok(Auth { known: Some(RwLock::new(Arc::new(known))), file: Some(path.into()) })
    }

    /// Reads the tokens file again and swaps in its tokens: a rotation without a
    /// restart (`visionq` does it on SIGHUP). A file that does not read or check
    /// leaves the tokens as they were. Returns how many tokens are now known.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let (Some(known), Some(path)) = (&self.known, &self.file) else { return Ok(0) };
        let fresh = read_tokens(path)?;
        let n = fresh.len();
        *known.write().expect("tokens lock") = Arc::new(fresh);
        Ok(n)
    }

    pub fn from_entries(entries: Vec<TokenEntry>) -> Result<Auth, String> {
        Ok(Auth { known: Some(RwLock::new(Arc::new(known_tokens(entries)?))), file: None })
    }

    pub fn enabled(&self) -> bool {
        self.known.is_some()
    }

    /// Who presents `token`. `Ok(None)` when authentication is off.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Option<Arc<Principal>>, Denied> {
        let Some(known) = &self.known else { return Ok(None) };
        let token = token.filter(|t| !t.is_empty()).ok_or(Denied::Missing)?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let known = known.read().expect("tokens lock").clone();
        // Every entry is compared, in constant time, whatever matched first.
        let mut found = None;
        for k in known.iter() {
            if bool::from(k.hash.ct_eq(&presented)) {
                found = Some(k.principal.clone());
            }
        }
        found.map(Some).ok_or(Denied::Invalid)
    }

    /// The check for posting a frame of `station`.
    pub fn post_frame(&self, token: Option<&str>, station: &str) -> Result<Option<Arc<Principal>>, Denied> {
        let who = self.authenticate(token)?;
        match &who {
            Some(p) if !p.may_post_for(station) => Err(Denied::Forbidden(match p.scope {
                Scope::Station => format!("this token may only post frames for {}", p.stations.join(", ")),
                s => format!("{} token is read-only; stations post with their own token", s.with_article()),
            })),
            _ => Ok(who),
        }
    }

    /// The check for an endpoint that needs at least `scope`.
    pub fn require(&self, token: Option<&str>, scope: Scope) -> Result<Option<Arc<Principal>>, Denied> {
        let who = self.authenticate(token)?;
        match &who {
            Some(p) if p.scope < scope => Err(Denied::Forbidden(format!("this needs {} token", scope.with_article()))),
            _ => Ok(who),
        }
    }
}

fn read_tokens(path: &Path) -> Result<Vec<Known>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read { path: path.into(), source })?;
    let invalid = |message: String| AuthError::Invalid { path: path.into(), message };
    let file: TokensFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    known_tokens(file.token).map_err(invalid)
}

fn known_tokens(entries: Vec<TokenEntry>) -> Result<Vec<Known>, String> {
    if entries.is_empty() {
        return Err("holds no [[token]] entry; with no token nobody could call the API".into());
    }
    let mut known: Vec<Known> = Vec::with_capacity(entries.len());
    for e in entries {
        let hash = parse_hash(&e.sha256).ok_or_else(|| format!("token `{}`: sha256 must be 64 hex digits", e.name))?;
        if e.scope == Scope::Station && e.stations.is_empty() {
            return Err(format!("station token `{}` names no station (stations = [\"…\"])", e.name));
        }
        if let Some(bad) = e.stations.iter().find(|s| !valid_station_id(s)) {
            return Err(format!("token `{}`: station id `{bad}` is not valid", e.name));
        }
        if known.iter().any(|k| k.hash == hash) {
            return Err(format!("token `{}`: the same token appears twice", e.name));
        }
        let principal = Arc::new(Principal { name: e.name, scope: e.scope, stations: e.stations });
        known.push(Known { hash, principal });
    }
    Ok(known)
}

/// The token in `Authorization: Bearer <token>` (case-insensitive scheme).
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex SHA-256 of a token, as the tokens file stores it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new token: `vq_` and 256 bits from the operating system's CSPRNG, URL-safe.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // 256 bits as 43 base64url digits (6 bits each, the last one holding 4).
    let mut out = String::from("vq_");
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> (Auth, String, String, String) {
        let (station, operator, admin) = (new_token(), new_token(), new_token());
        let entry = |name: &str, scope, stations: &[&str], token: &str| TokenEntry {
            name: name.into(),
            scope,
            stations: stations.iter().map(|s| s.to_string()).collect(),
            sha256: token_hash(token),
        };
        let auth = Auth::from_entries(vec![
            entry("cam1", Scope::Station, &["l1-cam1"], &station),
            entry("ops", Scope::Operator, &[], &operator),
            entry("root", Scope::Admin, &[], &admin),
        ])
        .unwrap();
        (auth, station, operator, admin)
    }

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let a = new_token();
        assert_eq!(a.len(), 3 + 43);
        assert!(a[3..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(a, new_token());
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn each_scope_gets_what_it_may_and_nothing_else() {
        let (auth, station, operator, admin) = auth();
        assert_eq!(auth.post_frame(None, "l1-cam1").unwrap_err(), Denied::Missing);
        assert_eq!(auth.post_frame(Some("vq_wrong"), "l1-cam1").unwrap_err(), Denied::Invalid);
        assert_eq!(auth.post_frame(Some(&station), "l1-cam1").unwrap().unwrap().name, "cam1");
        let other = auth.post_frame(Some(&station), "l1-cam2").unwrap_err();
        assert_eq!(other.status(), 403, "{other}");
        let ops = auth.post_frame(Some(&operator), "l1-cam1").unwrap_err();
        assert_eq!(ops.status(), 403);
        assert!(ops.to_string().contains("read-only"), "{ops}");
        assert!(auth.post_frame(Some(&admin), "l1-cam1").is_ok());

        assert_eq!(auth.require(Some(&station), Scope::Operator).unwrap_err().status(), 403);
        assert!(auth.require(Some(&operator), Scope::Operator).is_ok());
        assert_eq!(auth.require(Some(&operator), Scope::Admin).unwrap_err().status(), 403);
        assert!(auth.require(Some(&admin), Scope::Admin).is_ok());
        assert_eq!(auth.require(Some(""), Scope::Operator).unwrap_err(), Denied::Missing);
    }

    #[test]
    fn off_lets_everything_through_but_only_on_loopback() {
        let off = Auth::off();
        assert_eq!(off.post_frame(None, "any"), Ok(None));
        assert!(Auth::for_listener(None, "127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(Auth::for_listener(None, "[::1]:8080".parse().unwrap()).is_ok());
        let e = Auth::for_listener(None, "0.0.0.0:8080".parse().unwrap()).err().unwrap();
        assert!(e.to_string().contains("loopback"), "{e}");
    }

    #[test]
    fn the_tokens_file_is_checked_with_reasons() {
        let dir = std::env::temp_dir().join(format!("visionq-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens.toml");
        let check = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Auth::load(&file).err().map(|e| e.to_string())
        };
        let h = token_hash("t");
        assert_eq!(check(&format!("[[token]]\nname = \"a\"\nscope = \"operator\"\nsha256 = \"{h}\"\n")), None);
        assert!(check("").unwrap().contains("no [[token]]"));
        assert!(check("[[token]]\nname = \"a\"\nscope = \"operator\"\nsha256 = \"12\"\n").unwrap().contains("64 hex"));
        assert!(
            check(&format!("[[token]]\nname = \"a\"\nscope = \"station\"\nsha256 = \"{h}\"\n")).unwrap().contains("names no station")
        );
        assert!(check(&format!("[[token]]\nname = \"a\"\nscope = \"root\"\nsha256 = \"{h}\"\n")).unwrap().contains("scope"));
        let twice = format!(
            "[[token]]\nname = \"a\"\nscope = \"operator\"\nsha256 = \"{h}\"\n[[token]]\nname = \"b\"\nscope = \"admin\"\nsha256 = \"{h}\"\n"
        );
        assert!(check(&twice).unwrap().contains("twice"));
    }

    #[test]
    fn reload_swaps_tokens_and_keeps_them_when_the_file_is_bad() {
        let dir = std::env::temp_dir().join(format!("visionq-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens.toml");
        let entry = |t: &str| format!("[[token]]\nname = \"ops\"\nscope = \"operator\"\nsha256 = \"{}\"\n", token_hash(t));
        std::fs::write(&file, entry("old")).unwrap();
        let auth = Auth::load(&file).unwrap();
        assert!(auth.authenticate(Some("old")).is_ok());
        std::fs::write(&file, entry("new")).unwrap();
        assert_eq!(auth.reload().unwrap(), 1);
        assert_eq!(auth.authenticate(Some("old")).unwrap_err(), Denied::Invalid);
        assert!(auth.authenticate(Some("new")).is_ok());
        std::fs::write(&file, "not toml [").unwrap();
        assert!(auth.reload().is_err());
        assert!(auth.authenticate(Some("new")).is_ok(), "a bad file keeps the tokens that were");
    }

    #[test]
    fn scopes_parse_by_the_names_the_file_uses() {
        for scope in Scope::ALL {
            let in_file: TokenEntry = toml::from_str(&format!("name = \"n\"\nscope = \"{}\"\nsha256 = \"\"\n", scope.name())).unwrap();
            assert_eq!(in_file.scope, scope);
            assert_eq!(scope.name().parse::<Scope>(), Ok(scope));
        }
        assert!("root".parse::<Scope>().unwrap_err().contains("station, operator, reviewer and admin"));
    }

    #[test]
    fn bearer_header_is_parsed() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(None), None);
    }
}
