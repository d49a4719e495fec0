//! Bearer tokens: who may use the API.
//!
//! Tokens are never kept, compared or logged as they are: each is reduced to its SHA-256 digest
//! when loaded, and a presented token's digest is compared with every known digest in constant
//! time, without stopping at the first match. Comparing digests of equal length leaks neither
//! the tokens' lengths nor how many leading bytes matched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, ConfigError};
use crate::error::ApiError;

/// Shorter tokens are refused at start-up: a token is a password that is sent on every request.
pub const MIN_TOKEN_LEN: usize = 16;

type TokenDigest = [u8; 32];

/// The tokens the API accepts, or none configured (the API is open).
#[derive(Clone, Default)]
pub struct Auth(Option<Arc<Tokens>>);

struct Tokens {
    digests: RwLock<Arc<Vec<TokenDigest>>>,
    /// The file the tokens came from, and what it looked like when last read.
    file: Option<(PathBuf, Mutex<Option<FileStamp>>)>,
}

/// Enough of a file's metadata to notice that it was rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Auth(open)"),
            Some(tokens) => write!(f, "Auth({} token(s))", tokens.current().len()),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A token that is not one of ours (or another scheme).
    Invalid,
}

impl Auth {
    /// No tokens: every route is open.
    pub fn open() -> Self {
        Self(None)
    }

    /// Exactly these tokens (each at least [`MIN_TOKEN_LEN`] bytes).
    pub fn from_tokens<S: AsRef<str>>(tokens: &[S]) -> Result<Self, ConfigError> {
        let digests = digests("API_TOKEN", tokens.iter().map(AsRef::as_ref))?;
        Ok(Self(Some(Arc::new(Tokens {
            digests: RwLock::new(Arc::new(digests)),
            file: None,
        }))))
    }

    /// The tokens in `path`, one per line; [`Auth::reload_if_changed`] picks up a rewrite.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let (digests, stamp) = read_token_file(path)?;
        Ok(Self(Some(Arc::new(Tokens {
            digests: RwLock::new(Arc::new(digests)),
            file: Some((path.to_owned(), Mutex::new(Some(stamp)))),
        }))))
    }

    /// From API_TOKEN_FILE, else API_TOKEN, else open.
    pub fn from_config(config: &AuthConfig) -> Result<Self, ConfigError> {
        match (&config.api_token_file, &config.api_token) {
            (Some(path), _) => Self::from_file(path),
            (None, Some(list)) => {
                let tokens: Vec<&str> = list.split(',').map(str::trim).collect();
                Self::from_tokens(&tokens)
            }
            (None, None) => Ok(Self::open()),
        }
    }

    /// Whether any token is required.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// How many tokens are accepted now (0 when open).
    pub fn token_count(&self) -> usize {
        self.0.as_ref().map_or(0, |t| t.current().len())
    }

    /// Whether the request's `Authorization` header carries an accepted token.
    pub(crate) fn check(&self, authorization: Option<&HeaderValue>) -> Result<(), Denied> {
        let Some(tokens) = &self.0 else {
            return Ok(());
        };
        let header = authorization.ok_or(Denied::Missing)?;
        let token = bearer_token(header.as_bytes()).ok_or(Denied::Invalid)?;
        let presented: TokenDigest = Sha256::digest(token).into();
        if matches_any(&tokens.current(), &presented) {
            Ok(())
        } else {
            Err(Denied::Invalid)
        }
    }

    /// Re-reads the token file if it changed since it was last read. A file that became
    /// unreadable, empty or invalid keeps the tokens in force (and says why): locking every
    /// client out, or opening the API, because of a half-written file would be worse.
    pub fn reload_if_changed(&self) {
        let Some(tokens) = &self.0 else { return };
        let Some((path, last)) = &tokens.file else {
            return;
        };
        let now = stamp(path).ok();
        let mut last = last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.is_none() || now == *last {
            return;
        }
        match read_token_file(path) {
            Ok((digests, stamp)) => {
                let count = digests.len();
                *tokens
                    .digests
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(digests);
                *last = Some(stamp);
                tracing::info!(path = %path.display(), tokens = count, "API_TOKEN_FILE changed: tokens reloaded");
            }
            Err(e) => {
                *last = now;
                tracing::error!(error = %e, "API_TOKEN_FILE changed but cannot be used; the previous tokens stay in force");
            }
        }
    }

    /// Calls [`Auth::reload_if_changed`] every `period`, forever (spawn it).
    pub async fn watch(self, period: Duration) {
        if !matches!(&self.0, Some(t) if t.file.is_some()) {
            return;
        }
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let auth = self.clone();
            // A stat and, rarely, a small read: off the async threads anyway.
            let _ = tokio::task::spawn_blocking(move || auth.reload_if_changed()).await;
        }
    }
}

impl Tokens {
    fn current(&self) -> Arc<Vec<TokenDigest>> {
        self.digests
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Middleware for the protected routes: 401 unless the request carries an accepted token.
pub(crate) async fn require_token(
    State(auth): State<Auth>,
    request: Request,
    next: Next,
) -> Response {
    match auth.check(request.headers().get(header::AUTHORIZATION)) {
        Ok(()) => next.run(request).await,
        Err(denied) => ApiError::unauthorized(denied).into_response(),
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Whether `presented` equals any of `known`. Looks at every byte of every digest whatever
/// matches, so the time taken says nothing about which (or whether one) did.
fn matches_any(known: &[TokenDigest], presented: &TokenDigest) -> bool {
    let mut found = 0u8;
    for digest in known {
        let difference = digest
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        found |= u8::from(difference == 0);
    }
    std::hint::black_box(found) == 1
}

fn digests<'a>(
    source: &'static str,
    tokens: impl Iterator<Item = &'a str>,
) -> Result<Vec<TokenDigest>, ConfigError> {
    let mut digests = Vec::new();
    for token in tokens {
        if token.len() < MIN_TOKEN_LEN || token.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(ConfigError::BadToken {
                variable: source,
                min: MIN_TOKEN_LEN,
            });
        }
        digests.push(Sha256::digest(token.as_bytes()).into());
    }
    if digests.is_empty() {
        return Err(ConfigError::NoToken(source));
    }
    Ok(digests)
}

fn stamp(path: &Path) -> std::io::Result<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(FileStamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
    })
}

fn read_token_file(path: &Path) -> Result<(Vec<TokenDigest>, FileStamp), ConfigError> {
    let io = |source| ConfigError::SecretFile {
        variable: "API_TOKEN_FILE",
        path: path.to_owned(),
        source,
    };
    let stamp = stamp(path).map_err(io)?;
    let text = std::fs::read_to_string(path).map_err(io)?;
    let lines = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    Ok((digests("API_TOKEN_FILE", lines)?, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn only_a_known_bearer_token_passes() {
        let auth = Auth::from_tokens(&["0123456789abcdef-one", "0123456789abcdef-two"]).unwrap();
        assert_eq!(
            auth.check(Some(&value("Bearer 0123456789abcdef-one"))),
            Ok(())
        );
        assert_eq!(
            auth.check(Some(&value("bearer 0123456789abcdef-two"))),
            Ok(())
        );
        assert_eq!(auth.check(None), Err(Denied::Missing));
        for wrong in [
            "Bearer 0123456789abcdef-on",
            "Bearer 0123456789abcdef-one2",
            "Basic 0123456789abcdef-one",
            "Bearer",
            "Bearer ",
            "Bearer0123456789abcdef-one",
            "0123456789abcdef-one",
        ] {
            assert_eq!(
                auth.check(Some(&value(wrong))),
                Err(Denied::Invalid),
                "{wrong}"
            );
        }
        assert!(format!("{auth:?}").ends_with("(2 token(s))"));
    }

    #[test]
    fn open_without_tokens_and_short_or_empty_tokens_are_refused() {
        assert_eq!(Auth::open().check(None), Ok(()));
        assert!(matches!(
            Auth::from_tokens(&["short"]),
            Err(ConfigError::BadToken { .. })
        ));
        assert!(matches!(
            Auth::from_tokens(&["with a space inside it"]),
            Err(ConfigError::BadToken { .. })
        ));
        assert!(matches!(
            Auth::from_tokens::<&str>(&[]),
            Err(ConfigError::NoToken(_))
        ));
    }

    #[test]
    fn the_token_file_is_reread_when_it_changes_and_a_bad_rewrite_keeps_the_old_tokens() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "# rotation\nold-token-0123456789\n\n").unwrap();
        let auth = Auth::from_file(file.path()).unwrap();
        let old = value("Bearer old-token-0123456789");
        let new = value("Bearer new-token-0123456789");
        assert_eq!(auth.check(Some(&old)), Ok(()));
        assert_eq!(auth.check(Some(&new)), Err(Denied::Invalid));

        // Rotation: both for a while, then only the new one. Written in place, as a
        // bind-mounted file must be (the container keeps the inode it mounted).
        std::fs::write(file.path(), "old-token-0123456789\nnew-token-0123456789\n").unwrap();
        auth.reload_if_changed();
        assert_eq!(auth.token_count(), 2);
        assert_eq!(auth.check(Some(&old)), Ok(()));
        assert_eq!(auth.check(Some(&new)), Ok(()));
        std::fs::write(file.path(), "new-token-0123456789\n").unwrap();
        auth.reload_if_changed();
        assert_eq!(auth.check(Some(&old)), Err(Denied::Invalid));
        assert_eq!(auth.check(Some(&new)), Ok(()));

        std::fs::write(file.path(), "").unwrap();
        auth.reload_if_changed();
        assert_eq!(
            auth.check(Some(&new)),
            Ok(()),
            "an empty file changes nothing"
        );
    }
}
