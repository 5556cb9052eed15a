//! User tokens for an api that requires them: an HS256 secret, or an RS256
//! or ES256 key pair made with the `openssl` command for the test, and
//! tokens signed with it.

use std::path::{Path, PathBuf};
use std::process::Command;

use api::ApiConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A token issuer for one test; the key files are removed on drop.
pub struct TokenIssuer {
    pub algorithm: Algorithm,
    key: EncodingKey,
    /// HS256: the shared secret.
    pub secret: Option<String>,
    /// RS256/ES256: the public key's PEM file (its private key sits beside it).
    pub public_key_file: Option<PathBuf>,
    dir: Option<PathBuf>,
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl TokenIssuer {
    /// An issuer for `algorithm`: HS256, RS256 or ES256.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::HS256 => {
                let secret = format!("test-secret-{}", uuid::Uuid::new_v4().simple());
                Self {
                    algorithm,
                    key: EncodingKey::from_secret(secret.as_bytes()).unwrap(),
                    secret: Some(secret),
                    public_key_file: None,
                    dir: None,
                }
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let dir = std::env::temp_dir()
                    .join(format!("jwt-keys-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir).unwrap();
                let (private, public) = (dir.join("private.pem"), dir.join("public.pem"));
                let spec: &[&str] = if algorithm == Algorithm::RS256 {
                    &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
                } else {
                    &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
                };
                openssl(&[&["genpkey"], spec, &["-out", path(&private)]].concat());
                openssl(&[
                    "pkey",
                    "-in",
                    path(&private),
                    "-pubout",
                    "-out",
                    path(&public),
                ]);
                let pem = std::fs::read(&private).unwrap();
                let key = if algorithm == Algorithm::RS256 {
                    EncodingKey::from_rsa_pem(&pem)
                } else {
                    EncodingKey::from_ec_pem(&pem)
                }
                .expect("openssl's private key loads");
                Self {
                    algorithm,
                    key,
                    secret: None,
                    public_key_file: Some(public),
                    dir: Some(dir),
                }
            }
            other => panic!("no test issuer for {other:?}"),
        }
    }

    /// Sets the api's token settings to this issuer's key.
    pub fn configure(&self, config: &mut ApiConfig) {
        config.auth_jwt_secret = self.secret.clone();
        config.auth_jwt_public_key_file = self.public_key_file.clone();
    }

    /// A token with exactly these claims.
    pub fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.key).unwrap()
    }

    /// A token of user `sub` valid for ten minutes, with `extra` claims
    /// added (or replacing these).
    pub fn token(&self, sub: Value, extra: Value) -> String {
        let mut claims = json!({ "sub": sub, "exp": unix_now() + 600 });
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        self.sign(&claims)
    }

    /// A valid token of `user`.
    pub fn user(&self, user: i64) -> String {
        self.token(json!(user.to_string()), json!({}))
    }
}

/// Seconds since the epoch, as tokens count time.
pub fn unix_now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command runs (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
