//! The admin side's locks: the password (argon2id, salted), the one-time setup link, sessions
//! (random tokens stored hashed, ended after seven days idle) with their CSRF tokens, and the
//! slow-down after wrong passwords. No HTTP here: `http::admin` asks and renders.
//!
//! The password comes from `auth.admin_password` when the config sets one (then it cannot be
//! set or reset here); else a person sets it through the setup link, which holds a random token
//! kept hashed in the store until used. While no password exists, every start prints a fresh
//! link (the old one stops working); `freeway admin reset-password` forgets the password and
//! every session and prints a new link.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use lru::LruCache;
use rand::RngCore;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Secret;
use crate::crypto;
use crate::ledger::Clock;
use crate::store::{SessionRow, Store};

/// Sessions end after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(7 * 86_400);
/// The shortest password the setup accepts.
pub const MIN_PASSWORD: usize = 10;
/// Wrong passwords in a row from one address before login slows down.
const FREE_TRIES: u32 = 5;
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered for the slow-down at most (the oldest are forgotten).
const THROTTLE_CAPACITY: usize = 10_000;
/// How stale a session's last-seen time may get in the store before it is written again.
const TOUCH_EVERY_MS: i64 = 10 * 60_000;

const PASSWORD_SETTING: &str = "admin_password";
const SETUP_SETTING: &str = "admin_setup_token";

/// Why an admin action was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A password exists already (setup), or comes from the config (reset).
    #[error("{0}")]
    Conflict(String),
    /// The setup token is wrong or used.
    #[error("{0}")]
    Forbidden(String),
    /// The password is too short, or the like.
    #[error("{0}")]
    Invalid(String),
    #[error("the password is wrong")]
    WrongPassword,
    /// Too many wrong passwords from this address: try again after this.
    #[error("too many wrong passwords; try again in {}s", .0.as_secs().max(1))]
    SlowDown(Duration),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A live session, as a request presents it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token the cookie carries (only known when the session is new).
    pub token: Option<String>,
    /// What state-changing requests must send back in `X-CSRF-Token`.
    pub csrf: String,
    hash: [u8; 32],
}

/// Wrong passwords from one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Login is refused until then.
    until_ms: i64,
}

pub struct Admin {
    store: Arc<Store>,
    /// `auth.admin_password`, if the config sets one.
    fixed: Option<Secret>,
    clock: Arc<dyn Clock>,
    /// Wrong passwords per address, the least recently wrong forgotten first.
    throttle: Mutex<LruCache<IpAddr, Failures>>,
}

/// Check `password` against a stored argon2 hash, in this thread's reused memory: argon2 needs
/// its whole memory cost (19 MiB by default) per check, and allocating it for every check left
/// a freed copy in the allocator of every thread that ever checked one (hundreds of MB after a
/// storm of logins). Password checks run on `offload::hash`'s few threads, so this is at most a
/// few such buffers for the life of the process.
fn verify(password: &str, stored: &PasswordHash) -> anyhow::Result<bool> {
    use argon2::{Algorithm, Block, Params, Version};
    thread_local! {
        static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let damaged =
        |e: &dyn std::fmt::Display| anyhow::anyhow!("the stored password hash is damaged: {e}");
    let params = Params::try_from(stored).map_err(|e| damaged(&e))?;
    let algorithm = Algorithm::try_from(stored.algorithm).map_err(|e| damaged(&e))?;
    let version = match stored.version {
        Some(v) => Version::try_from(v).map_err(|e| damaged(&e))?,
        None => Version::default(),
    };
    let (Some(salt), Some(expected)) = (stored.salt, stored.hash) else {
        return Err(damaged(&"no salt or hash"));
    };
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes).map_err(|e| damaged(&e))?;
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                &mut memory[..blocks],
            )
            .map_err(|e| damaged(&e))
    })?;
    Ok(subtle::ConstantTimeEq::ct_eq(out.as_slice(), expected.as_bytes()).into())
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Admin {
    pub fn new(store: Arc<Store>, fixed: Option<Secret>, clock: Arc<dyn Clock>) -> Admin {
        Admin {
            store,
            fixed,
            clock,
            throttle: Mutex::new(LruCache::new(
                NonZeroUsize::new(THROTTLE_CAPACITY).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// No password yet: the admin side waits for the setup link.
    pub fn needs_setup(&self) -> anyhow::Result<bool> {
        Ok(self.fixed.is_none() && self.store.setting(PASSWORD_SETTING)?.is_none())
    }

    /// A fresh setup token (the old one stops working), while no password exists.
    pub fn setup_token(&self) -> anyhow::Result<Option<String>> {
        if !self.needs_setup()? {
            return Ok(None);
        }
        let token = random_hex(24);
        let hash = crypto::hash_client_key(&token);
        self.store.set_setting(SETUP_SETTING, &hash)?;
        Ok(Some(token))
    }

    /// Forget the password and end every session; a new setup token.
    pub fn reset_password(&self) -> Result<String, Error> {
        if self.fixed.is_some() {
            return Err(Error::Conflict(
                "the admin password comes from the config (auth.admin_password); change it there"
                    .into(),
            ));
        }
        self.store.delete_setting(PASSWORD_SETTING)?;
        self.store.end_sessions(None, i64::MIN)?;
        Ok(self.setup_token()?.unwrap_or_default())
    }

    /// Set the first password with the setup token; a session for whoever did.
    pub fn setup(&self, token: &str, password: &str) -> Result<Session, Error> {
        if !self.needs_setup()? {
            return Err(Error::Conflict(
                "a password is set already; log in (or run `freeway admin reset-password`)".into(),
            ));
        }
        let stored = self.store.setting(SETUP_SETTING)?;
        let given = crypto::hash_client_key(token);
        let ok = stored
            .and_then(|s| <[u8; 32]>::try_from(s.as_slice()).ok())
            .is_some_and(|s| crypto::digest_eq(&s, &given));
        if !ok {
            return Err(Error::Forbidden(
                "this setup link is not valid (any more); use the newest one the server printed, or run `freeway admin reset-password`".into(),
            ));
        }
        if password.chars().count() < MIN_PASSWORD {
            return Err(Error::Invalid(format!(
                "the password must have at least {MIN_PASSWORD} characters"
            )));
        }
        crate::offload::assert_off_loop("a password hash");
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?
            .to_string();
        self.store.set_setting(PASSWORD_SETTING, hash.as_bytes())?;
        self.store.delete_setting(SETUP_SETTING)?;
        self.new_session()
    }

    /// Log in from `from`; a new session. Slowed down after repeated wrong passwords.
    pub fn login(&self, from: IpAddr, password: &str) -> Result<Session, Error> {
        let now = self.now();
        if let Some(wait) = self.slowed(from) {
            return Err(Error::SlowDown(wait));
        }
        if self.password_matches(password)? {
            self.throttle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop(&from);
            return self.new_session();
        }
        self.failed(from, now);
        Err(Error::WrongPassword)
    }

    fn password_matches(&self, password: &str) -> anyhow::Result<bool> {
        if let Some(fixed) = &self.fixed {
            let (a, b) = (
                crypto::hash_client_key(fixed.expose()),
                crypto::hash_client_key(password),
            );
            return Ok(crypto::digest_eq(&a, &b));
        }
        let Some(stored) = self.store.setting(PASSWORD_SETTING)? else {
            return Ok(false);
        };
        let stored = String::from_utf8(stored)?;
        crate::offload::assert_off_loop("a password hash");
        let hash = PasswordHash::new(&stored)
            .map_err(|e| anyhow::anyhow!("the stored password hash is damaged: {e}"))?;
        verify(password, &hash)
    }

    /// How long `from` must wait before its next login, if it must (memory only: answered
    /// on the event loop, before a password is hashed).
    pub fn slowed(&self, from: IpAddr) -> Option<Duration> {
        let now = self.now();
        let t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        t.peek(&from)
            .filter(|f| f.until_ms > now)
            .map(|f| Duration::from_millis((f.until_ms - now) as u64))
    }

    /// One more wrong password from `from`: from the fifth in a row, a delay that doubles.
    fn failed(&self, from: IpAddr, now: i64) {
        let mut t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        let f = t.get_or_insert_mut(from, || Failures {
            count: 0,
            until_ms: 0,
        });
        f.count += 1;
        if f.count >= FREE_TRIES {
            let doublings = (f.count - FREE_TRIES).min(20);
            let delay = Duration::from_secs(1u64 << doublings).min(MAX_DELAY);
            f.until_ms = now + delay.as_millis() as i64;
        }
    }

    fn new_session(&self) -> Result<Session, Error> {
        let token = random_hex(32);
        let hash = crypto::hash_client_key(&token);
        let csrf = random_hex(24);
        let now = self.now();
        self.store.insert_session(&SessionRow {
            hash,
            csrf: csrf.clone(),
            created_ms: now,
            seen_ms: now,
        })?;
        Ok(Session {
            token: Some(token),
            csrf,
            hash,
        })
    }

    /// The live session a cookie's token opens, if any; a request in it keeps it alive.
    pub fn session(&self, token: &str) -> anyhow::Result<Option<Session>> {
        let hash = crypto::hash_client_key(token);
        let Some(row) = self.store.session(&hash)? else {
            return Ok(None);
        };
        let now = self.now();
        if now - row.seen_ms > SESSION_IDLE.as_millis() as i64 {
            self.store
                .end_sessions(Some(&hash), now - SESSION_IDLE.as_millis() as i64)?;
            return Ok(None);
        }
        if now - row.seen_ms > TOUCH_EVERY_MS {
            self.store.touch_session(&hash, now)?;
        }
        Ok(Some(Session {
            token: None,
            csrf: row.csrf,
            hash,
        }))
    }

    /// End a session.
    pub fn logout(&self, session: &Session) -> anyhow::Result<()> {
        let idle_before = self.now() - SESSION_IDLE.as_millis() as i64;
        self.store.end_sessions(Some(&session.hash), idle_before)
    }

    /// Whether `given` is the session's CSRF token.
    pub fn csrf_ok(session: &Session, given: Option<&str>) -> bool {
        given.is_some_and(|g| {
            crypto::digest_eq(
                &crypto::hash_client_key(g),
                &crypto::hash_client_key(&session.csrf),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::ManualClock;

    fn admin(fixed: Option<&str>) -> (Admin, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = Arc::new(Store::memory().unwrap());
        (
            Admin::new(store, fixed.map(Secret::new), clock.clone()),
            clock,
        )
    }

    #[test]
    fn setup_once_then_login_and_sessions() {
        let (a, clock) = admin(None);
        assert!(a.needs_setup().unwrap());
        let old = a.setup_token().unwrap().unwrap();
        let token = a.setup_token().unwrap().unwrap();
        assert!(
            matches!(a.setup(&old, "long enough pw"), Err(Error::Forbidden(_))),
            "the old link stopped working"
        );
        assert!(matches!(a.setup(&token, "short"), Err(Error::Invalid(_))));
        let s = a.setup(&token, "long enough pw").unwrap();
        assert!(!a.needs_setup().unwrap());
        assert!(matches!(
            a.setup(&token, "another pw!!"),
            Err(Error::Conflict(_))
        ));
        let cookie = s.token.clone().unwrap();
        let live = a.session(&cookie).unwrap().unwrap();
        assert_eq!(live.csrf, s.csrf);
        assert!(Admin::csrf_ok(&live, Some(&s.csrf)));
        assert!(!Admin::csrf_ok(&live, Some("nope")) && !Admin::csrf_ok(&live, None));

        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(matches!(
            a.login(ip, "wrong password"),
            Err(Error::WrongPassword)
        ));
        let again = a.login(ip, "long enough pw").unwrap();
        assert_ne!(again.token, s.token);

        clock.advance(SESSION_IDLE + Duration::from_secs(1));
        assert!(
            a.session(&cookie).unwrap().is_none(),
            "seven days idle end a session"
        );
        let fresh = a.login(ip, "long enough pw").unwrap();
        let fresh_cookie = fresh.token.clone().unwrap();
        a.logout(&a.session(&fresh_cookie).unwrap().unwrap())
            .unwrap();
        assert!(a.session(&fresh_cookie).unwrap().is_none());
    }

    #[test]
    fn wrong_passwords_slow_login_down_doubling() {
        let (a, clock) = admin(Some("the config password"));
        assert!(!a.needs_setup().unwrap());
        assert!(a.setup_token().unwrap().is_none());
        assert!(matches!(a.reset_password(), Err(Error::Conflict(_))));
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let other: IpAddr = "10.0.0.3".parse().unwrap();
        for _ in 0..4 {
            assert!(matches!(a.login(ip, "x"), Err(Error::WrongPassword)));
        }
        assert!(matches!(a.login(ip, "x"), Err(Error::WrongPassword)));
        // The fifth wrong one starts the delay: even the right password waits.
        let Err(Error::SlowDown(d)) = a.login(ip, "the config password") else {
            panic!("not slowed down")
        };
        assert_eq!(d, Duration::from_secs(1));
        assert!(
            a.login(other, "the config password").is_ok(),
            "other addresses are not slowed"
        );
        clock.advance(Duration::from_secs(1));
        assert!(matches!(a.login(ip, "x"), Err(Error::WrongPassword)));
        let Err(Error::SlowDown(d)) = a.login(ip, "x") else {
            panic!("not slowed down")
        };
        assert_eq!(d, Duration::from_secs(2), "the delay doubles");
        for _ in 0..30 {
            clock.advance(MAX_DELAY);
            let _ = a.login(ip, "x");
        }
        let Err(Error::SlowDown(d)) = a.login(ip, "x") else {
            panic!("not slowed down")
        };
        assert!(d <= MAX_DELAY, "{d:?}");
        clock.advance(MAX_DELAY);
        assert!(a.login(ip, "the config password").is_ok());
        assert!(
            matches!(a.login(ip, "x"), Err(Error::WrongPassword)),
            "a success starts over"
        );
    }
}
