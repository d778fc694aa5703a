//! Sealing and opening secrets: AES-256-GCM for provider keys, SHA-256 for client keys.
//!
//! The only module that turns plaintext into ciphertext. A sealed value is `nonce (12 bytes) ||
//! ciphertext+tag`, with a fresh random nonce per seal and the row's identity as associated data,
//! so a ciphertext copied to another row does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::Context;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

use crate::config::Secret;

const NONCE_LEN: usize = 12;
/// Name of the generated key file inside `data_dir`.
pub const KEY_FILE: &str = "encryption.key";

/// Holds the encryption key; seals and opens provider keys.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

/// Opening failed: wrong key, or the data was altered.
#[derive(Debug, thiserror::Error)]
#[error("cannot decrypt: the encryption key is wrong or the data was altered")]
pub struct OpenError;

impl Sealer {
    /// From 64 hex characters.
    pub fn from_hex(text: &str) -> anyhow::Result<Sealer> {
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .context("an encryption key must be 64 hex characters (32 bytes)")?;
        Ok(Sealer {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
        })
    }

    /// Use `FREEWAY_ENCRYPTION_KEY` if given, else the key file in `data_dir`, creating it
    /// (mode 0600) when it does not exist. Returns the sealer and where the key came from.
    pub fn load_or_create(
        data_dir: &Path,
        env_key: Option<&Secret>,
    ) -> anyhow::Result<(Sealer, KeySource)> {
        if let Some(key) = env_key {
            let sealer = Sealer::from_hex(key.expose()).context(
                "FREEWAY_ENCRYPTION_KEY is malformed: it must be 64 hex characters (generate one with `openssl rand -hex 32`)",
            )?;
            return Ok((sealer, KeySource::Environment));
        }
        let path = data_dir.join(KEY_FILE);
        if path.exists() {
            check_mode(&path)?;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read the key file {}", path.display()))?;
            let sealer = Sealer::from_hex(&text).with_context(|| {
                format!(
                    "the key file {} is malformed; restore it from a backup (it must hold 64 hex characters)",
                    path.display()
                )
            })?;
            return Ok((sealer, KeySource::File(path)));
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let text = hex::encode(bytes);
        write_private(&path, text.as_bytes())
            .with_context(|| format!("cannot create the key file {}", path.display()))?;
        Ok((Sealer::from_hex(&text)?, KeySource::Created(path)))
    }

    /// Encrypt `plaintext` bound to `aad` (the row's identity).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let Ok(ciphertext) = self.cipher.encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        ) else {
            // aes-gcm only fails for plaintexts beyond 64 GiB, far above any key.
            unreachable!("AES-GCM refused a plaintext of {} bytes", plaintext.len())
        };
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypt what [`Sealer::seal`] produced with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| OpenError)
    }
}

/// Where the encryption key came from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    Environment,
    File(PathBuf),
    Created(PathBuf),
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(unix)]
fn check_mode(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            "the key file {} has mode {mode:o}; others can read it. Run: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// A fresh client key: `fw-` and 43 base62 characters (256 random bits).
pub fn new_client_key() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let mut key = String::from("fw-");
    while key.len() < 3 + 43 {
        // Rejection sampling keeps every character uniform: 248 = 4 * 62.
        let b = (rng.next_u32() & 0xff) as u8;
        if b < 248 {
            key.push(ALPHABET[(b % 62) as usize] as char);
        }
    }
    key
}

/// A random identifier for database rows (hex, 16 bytes).
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// SHA-256 of a client key. Client keys carry 256 random bits, so a fast hash is enough.
pub fn hash_client_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Compare two digests in constant time.
pub fn digest_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// A short display form of a secret: a few leading characters and the last four, never enough
/// to use. Short secrets show nothing at all.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 16 {
        return "****".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_with_row_binding() {
        let s = Sealer::from_hex(&"11".repeat(32)).unwrap();
        let sealed = s.seal(b"gsk_secret", b"row-1");
        assert_eq!(s.open(&sealed, b"row-1").unwrap(), b"gsk_secret");
        assert!(s.open(&sealed, b"row-2").is_err(), "bound to its row");
        let other = Sealer::from_hex(&"22".repeat(32)).unwrap();
        assert!(other.open(&sealed, b"row-1").is_err(), "wrong key");
        assert!(s.open(&sealed[..10], b"row-1").is_err(), "truncated");
        assert_ne!(
            s.seal(b"x", b"r"),
            s.seal(b"x", b"r"),
            "fresh nonce each time"
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(Sealer::from_hex("abc").is_err());
        assert!(Sealer::from_hex(&"zz".repeat(32)).is_err());
        assert!(Sealer::from_hex(&"11".repeat(31)).is_err());
    }

    #[test]
    fn client_keys_have_the_documented_shape() {
        let k = new_client_key();
        assert!(k.starts_with("fw-"));
        assert_eq!(k.len(), 46);
        assert!(k[3..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(k, new_client_key());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, src) = Sealer::load_or_create(dir.path(), None).unwrap();
        assert!(matches!(src, KeySource::Created(_)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (b, src) = Sealer::load_or_create(dir.path(), None).unwrap();
        assert!(matches!(src, KeySource::File(_)));
        let sealed = a.seal(b"k", b"r");
        assert_eq!(b.open(&sealed, b"r").unwrap(), b"k");
    }

    #[test]
    fn masks_hide_the_middle() {
        assert_eq!(mask("gsk_1234567890abcdef"), "gsk_…cdef");
        assert_eq!(mask("short"), "****");
    }
}
