//! Who the user of a call is: the door's question right after the ids.
//!
//! With `AUTH_JWT_SECRET` (HS256) or `AUTH_JWT_PUBLIC_KEY_FILE` (a PEM public
//! key; the algorithm follows its type: RSA → RS256, EC P-256 → ES256, P-384
//! → ES384, Ed25519 → EdDSA) the issue call and result lookups need
//! `Authorization: Bearer <jwt>`. A token passes when
//! - its signature verifies with exactly that algorithm (its header's `alg`
//!   cannot choose another: no `none`, no HS256 keyed with the public key);
//! - it has an `exp` that is not past ([`LEEWAY`] allowed for clock skew);
//! - it carries `iss` = `AUTH_JWT_ISSUER` and an `aud` holding
//!   `AUTH_JWT_AUDIENCE` when those are set (then they are required; a token
//!   with an `aud` is refused when no audience is set, as RFC 7519 asks);
//! - its `sub` is a positive integer, as a JSON string or number: the user.
//!
//! Anything else is `401 UNAUTHENTICATED`. The `userId` of the query may
//! then be left out; one that differs from `sub` is `403 USER_MISMATCH`.
//!
//! Without those settings the api trusts the `userId` of each request (a
//! gateway in front must authenticate users) and says so once at start-up.
//!
//! A request id is answered only to its owner ([`Viewer::may_see`]): a
//! result of another user reads as `404`, like an unknown id.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use common::domain::UserId;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use uuid::Uuid;

use crate::door::Outcome;
use crate::error::ApiError;
use crate::extract::{bearer, ApiQuery};
use crate::recent::Recent;
use crate::state::AppState;

/// Clock skew allowed on `exp` (the library's default).
pub const LEEWAY: Duration = Duration::from_secs(60);
/// HS256 keys shorter than the hash are refused (RFC 7518 §3.2).
const MIN_SECRET_BYTES: usize = 32;
/// Owners of accepted requests remembered for pending lookups: as many and
/// as long as `crate::waiting` remembers their place in the queue.
const OWNERS_CAPACITY: usize = 100_000;
const OWNERS_TTL: Duration = Duration::from_secs(30 * 60);

/// The token settings, as `crate::config` reads them.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    pub secret: Option<String>,
    pub public_key_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Whether the api requires user tokens, and how it checks them; cheap to
/// clone.
#[derive(Clone, Default)]
pub struct Auth {
    jwt: Option<Arc<Jwt>>,
}

struct Jwt {
    key: DecodingKey,
    validation: Validation,
    /// Who made each request this api accepted, for lookups of requests
    /// that have no result yet.
    owners: Recent<UserId>,
}

impl Auth {
    /// Tokens are required when a secret or a key file is set. A bad
    /// setting stops start-up, naming its variable.
    pub fn new(settings: &JwtSettings) -> anyhow::Result<Self> {
        let (key, algorithm) = match (&settings.secret, &settings.public_key_file) {
            (None, None) => return Ok(Self::default()),
            (Some(_), Some(_)) => bail!(
                "AUTH_JWT_SECRET and AUTH_JWT_PUBLIC_KEY_FILE are both set: set one (HS256 with \
                 the secret, or RS256/ES256 with the public key)"
            ),
            (Some(secret), None) => (hmac_key(secret)?, Algorithm::HS256),
            (None, Some(path)) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("AUTH_JWT_PUBLIC_KEY_FILE: reading {}", path.display())
                })?;
                public_key(&pem)
                    .with_context(|| format!("AUTH_JWT_PUBLIC_KEY_FILE: {}", path.display()))?
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY.as_secs();
        // `sub` is checked here, as a string or a number (the library only
        // takes strings).
        let mut required = vec!["exp"];
        if let Some(iss) = &settings.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &settings.audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            jwt: Some(Arc::new(Jwt {
                key,
                validation,
                // The oldest goes, so a flood never keeps the newest
                // owners out (as in `crate::waiting`'s index).
                owners: Recent::new(OWNERS_CAPACITY, OWNERS_TTL),
            })),
        })
    }

    /// Whether calls need a user token.
    pub fn required(&self) -> bool {
        self.jwt.is_some()
    }

    /// Remembers that `user` made `request` (with tokens required), so that
    /// a lookup by its owner is answered before its result exists. Call it
    /// when a request id is handed to a client.
    pub fn accepted(&self, request: Uuid, user: UserId) {
        if let Some(jwt) = &self.jwt {
            jwt.owners.insert(request, user);
        }
    }

    /// The user of the call's bearer token; `None` when tokens are not
    /// required.
    fn user(&self, parts: &Parts) -> Result<Option<UserId>, ApiError> {
        let Some(jwt) = &self.jwt else {
            return Ok(None);
        };
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::unauthenticated("an Authorization: Bearer <token> header is required")
        })?;
        let data = jsonwebtoken::decode::<Claims>(token, &jwt.key, &jwt.validation)
            .map_err(|e| ApiError::unauthenticated(token_refusal(e.kind())))?;
        let user = data.claims.sub.as_ref().and_then(subject).ok_or_else(|| {
            ApiError::unauthenticated("the token's sub is not a positive integer user id")
        })?;
        Ok(Some(user))
    }
}

/// What a client is told about a refused token: enough to fix its side,
/// nothing about the key.
fn token_refusal(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "the token has expired",
        K::InvalidIssuer => "the token's issuer is not accepted",
        K::InvalidAudience => "the token's audience is not accepted",
        K::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss or aud)",
        K::InvalidAlgorithm => "the token's algorithm is not accepted",
        K::ImmatureSignature => "the token is not valid yet",
        _ => "the token is malformed or its signature does not verify",
    }
}

/// The claims read here; `exp`, `iss` and `aud` are checked by the library.
#[derive(Deserialize)]
struct Claims {
    sub: Option<serde_json::Value>,
}

/// `sub` as a user id: a positive integer, as a string (`"42"`) or a number.
fn subject(sub: &serde_json::Value) -> Option<UserId> {
    match sub {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_i64()?.try_into().ok(),
        _ => None,
    }
}

fn hmac_key(secret: &str) -> anyhow::Result<DecodingKey> {
    if secret.len() < MIN_SECRET_BYTES {
        bail!("AUTH_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes for HS256");
    }
    DecodingKey::from_secret(secret.as_bytes()).context("AUTH_JWT_SECRET")
}

/// A PEM public key and the algorithm it verifies: the first of its
/// family's that the crypto provider accepts the key for (an EC key on
/// P-256 is ES256, on P-384 ES384).
fn public_key(pem: &[u8]) -> anyhow::Result<(DecodingKey, Algorithm)> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("PRIVATE KEY-----") {
        bail!("holds a private key; give the public one (`openssl pkey -pubout`)");
    }
    let candidates = [
        (DecodingKey::from_rsa_pem(pem), AlgorithmFamily::Rsa),
        (DecodingKey::from_ec_pem(pem), AlgorithmFamily::Ec),
        (DecodingKey::from_ed_pem(pem), AlgorithmFamily::Ed),
    ];
    let provider = CryptoProvider::try_get_default().context("no JWT crypto provider built in")?;
    for (key, family) in candidates {
        let Ok(key) = key else { continue };
        let algorithms: &[Algorithm] = match family {
            AlgorithmFamily::Rsa => &[Algorithm::RS256],
            AlgorithmFamily::Ec => &[Algorithm::ES256, Algorithm::ES384],
            _ => &[Algorithm::EdDSA],
        };
        // Building a verifier parses the key: a broken one fails here, at
        // start-up, not on the first request.
        if let Some(alg) = algorithms
            .iter()
            .find(|alg| (provider.verifier_factory)(alg, &key).is_ok())
        {
            return Ok((key, *alg));
        }
    }
    bail!("not a PEM public key of type RSA, EC (P-256, P-384) or Ed25519")
}

#[derive(Debug, Deserialize)]
struct IssueParams {
    #[serde(rename = "userId")]
    user_id: Option<String>,
}

/// The user of an issue call. With tokens required: the token's `sub`
/// (`401` without a valid token), and `userId` may be left out (`403
/// USER_MISMATCH` when it names someone else). Without: the `userId` of the
/// query. Either way a malformed `userId` is `400` first.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub UserId);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ApiQuery(params) = ApiQuery::<IssueParams>::from_request_parts(parts, state).await?;
        let named: Option<UserId> = params
            .user_id
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request("INVALID_USER_ID", format!("userId {e}")))?;
        let token = state
            .auth
            .user(parts)
            .inspect_err(|_| Outcome::Unauthenticated.count())?;
        match (token, named) {
            (Some(token), Some(named)) if named != token => {
                Outcome::UserMismatch.count();
                Err(ApiError::user_mismatch(named, token))
            }
            (Some(user), _) | (None, Some(user)) => Ok(Caller(user)),
            (None, None) => Err(ApiError::bad_request(
                "MISSING_USER_ID",
                "query parameter userId is required",
            )),
        }
    }
}

/// Who looks a request up: the token's user when tokens are required
/// (`401` without a valid one), anyone otherwise.
#[derive(Clone)]
pub struct Viewer {
    user: Option<UserId>,
    auth: Auth,
}

impl Viewer {
    /// Whether a result of `owner` may be shown.
    pub fn may_see(&self, owner: i64) -> bool {
        self.user.is_none_or(|u| u.get() == owner)
    }

    /// Whether a request with no result yet may be shown as pending. With
    /// tokens required, only when this api accepted it from this user: an
    /// instance that did not (another one did, or it restarted since)
    /// cannot tell whose it is, and answers `404` until the result exists.
    pub fn may_see_pending(&self, request: Uuid) -> bool {
        match (&self.user, &self.auth.jwt) {
            (Some(user), Some(jwt)) => jwt.owners.get(&request) == Some(*user),
            _ => true,
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Viewer {
            user: state.auth.user(parts)?,
            auth: state.auth.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sub_is_a_positive_integer_as_a_string_or_a_number() {
        let user = |v: serde_json::Value| subject(&v).map(UserId::get);
        assert_eq!(user(json!("42")), Some(42));
        assert_eq!(user(json!(42)), Some(42));
        for bad in [
            json!("0"),
            json!(0),
            json!(-3),
            json!("-3"),
            json!(4.5),
            json!("4.0"),
            json!(" 7"),
            json!("alice"),
            json!(null),
            json!(["1"]),
            json!(u64::MAX),
        ] {
            assert_eq!(user(bad.clone()), None, "{bad}");
        }
    }

    #[test]
    fn a_bad_setting_names_its_variable() {
        let err = |s: JwtSettings| format!("{:#}", Auth::new(&s).err().unwrap());
        let both = err(JwtSettings {
            secret: Some("x".repeat(40)),
            public_key_file: Some("/nowhere.pem".into()),
            ..Default::default()
        });
        assert!(both.contains("AUTH_JWT_SECRET") && both.contains("AUTH_JWT_PUBLIC_KEY_FILE"));
        let short = err(JwtSettings {
            secret: Some("short".into()),
            ..Default::default()
        });
        assert!(short.contains("AUTH_JWT_SECRET"), "{short}");
        let missing = err(JwtSettings {
            public_key_file: Some("/nowhere/key.pem".into()),
            ..Default::default()
        });
        assert!(missing.contains("AUTH_JWT_PUBLIC_KEY_FILE"), "{missing}");
        assert!(!Auth::new(&JwtSettings::default()).unwrap().required());
    }

    #[test]
    fn a_key_file_that_is_not_a_public_key_is_refused() {
        for pem in [
            &b"not a key"[..],
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            assert!(public_key(pem).is_err(), "{}", String::from_utf8_lossy(pem));
        }
    }
}
