//! Built-in users: passwords from the configuration (plain text is hashed at
//! start, so only argon2 hashes stay in memory) and HS256 tokens signed with
//! a key kept in the data folder, so tokens outlive a restart.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use kumulus_core::config::UserEntry;
use kumulus_core::ports::{AuthError, Authenticator, IssuedToken, Principal};

const ISSUER: &str = "kumulus";
const AUDIENCE: &str = "kumulus-api";

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
}

pub struct BuiltinUsers {
    hashes: Arc<HashMap<String, String>>,
    /// Verified against for unknown users, so both cases take the same time.
    decoy: Arc<String>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: u64,
}

impl BuiltinUsers {
    /// `key` is the token signing key.
    pub fn new(users: &[UserEntry], key: &[u8], ttl_secs: u64) -> Result<Self, String> {
        let mut hashes = HashMap::new();
        for u in users {
            let hash = if u.password.starts_with("$argon2") {
                let parsed = PasswordHash::new(&u.password).map_err(|e| {
                    format!("auth.users: the hash of `{}` is not valid: {e}", u.username)
                })?;
                if parsed.hash.is_none() || parsed.salt.is_none() {
                    return Err(format!(
                        "auth.users: the hash of `{}` has no salt or hash part",
                        u.username
                    ));
                }
                u.password.clone()
            } else {
                hash_password(&u.password)?
            };
            hashes.insert(u.username.clone(), hash);
        }
        Ok(Self {
            hashes: Arc::new(hashes),
            decoy: Arc::new(hash_password("decoy password")?),
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            ttl_secs,
        })
    }

    /// Whether any user's password is `password` (to refuse public listening
    /// while the default password is in use).
    pub fn any_has_password(&self, password: &str) -> bool {
        self.hashes.values().any(|h| verify_password(password, h))
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// Signs a token for `username` (tests use this to make expired tokens).
    pub fn sign(&self, username: &str, iat: u64, exp: u64) -> Result<String, AuthError> {
        let claims = Claims {
            sub: username.into(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat,
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))
    }
}

/// Reads the signing key from `path`, or makes a new random one there.
pub fn load_or_create_key(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is shorter than 32 bytes", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    use std::io::Write;
    #[cfg(unix)]
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?
    };
    #[cfg(not(unix))]
    let mut file = std::fs::File::create_new(path)?;
    file.write_all(&key)?;
    file.sync_all()?;
    Ok(key)
}

#[async_trait]
impl Authenticator for BuiltinUsers {
    async fn login(&self, username: &str, password: &str) -> Result<IssuedToken, AuthError> {
        let hash = self.hashes.get(username).cloned();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.to_string());
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        if !(ok && known) {
            return Err(AuthError::InvalidCredentials);
        }
        let now = Self::now();
        let access_token = self.sign(username, now, now + self.ttl_secs)?;
        Ok(IssuedToken {
            access_token,
            expires_in: self.ttl_secs,
        })
    }

    async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        // A token for a user since removed from the configuration is void.
        if !self.hashes.contains_key(&data.claims.sub) {
            return Err(AuthError::InvalidToken("unknown user".into()));
        }
        Ok(Principal {
            username: data.claims.sub,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(key: &[u8]) -> BuiltinUsers {
        let hashed = hash_password("s3cret").unwrap();
        BuiltinUsers::new(
            &[
                UserEntry {
                    username: "ana".into(),
                    password: "plain".into(),
                },
                UserEntry {
                    username: "bob".into(),
                    password: hashed,
                },
            ],
            key,
            3600,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn logs_in_with_plain_and_hashed_passwords() {
        let u = users(&[7; 32]);
        let t = u.login("ana", "plain").await.unwrap();
        assert_eq!(u.verify(&t.access_token).await.unwrap().username, "ana");
        let t = u.login("bob", "s3cret").await.unwrap();
        assert_eq!(u.verify(&t.access_token).await.unwrap().username, "bob");
        assert!(matches!(
            u.login("ana", "wrong").await,
            Err(AuthError::InvalidCredentials)
        ));
        assert!(matches!(
            u.login("eve", "plain").await,
            Err(AuthError::InvalidCredentials)
        ));
        assert!(u.any_has_password("plain"));
        assert!(!u.any_has_password("demo"));
    }

    #[tokio::test]
    async fn refuses_foreign_expired_and_garbled_tokens() {
        let u = users(&[7; 32]);
        let other = users(&[8; 32]);
        let foreign = other.login("ana", "plain").await.unwrap().access_token;
        assert!(u.verify(&foreign).await.is_err());
        let expired = u.sign("ana", 1, 2).unwrap();
        assert!(u.verify(&expired).await.is_err());
        assert!(u.verify("not.a.token").await.is_err());
        let ghost = u
            .sign("ghost", BuiltinUsers::now(), BuiltinUsers::now() + 60)
            .unwrap();
        assert!(u.verify(&ghost).await.is_err());
    }

    #[test]
    fn refuses_a_bad_hash_in_config() {
        let err = BuiltinUsers::new(
            &[UserEntry {
                username: "x".into(),
                password: "$argon2id$garbage".into(),
            }],
            &[1; 32],
            60,
        )
        .err()
        .unwrap();
        assert!(err.contains("auth.users"));
    }
}
