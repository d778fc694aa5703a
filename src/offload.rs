//! Work that may block — a database call, a password hash, a file write — runs here, off the
//! event loop, with bounded concurrency (SPEC 7: nothing blocks the event loop).
//!
//! [`run`] moves a closure to the blocking pool, at most [`AT_ONCE`] at a time (the rest wait
//! their turn as cheap futures, not as threads). [`hash_permit`] bounds password hashes (argon2
//! takes 19 MiB each): [`HASHES_AT_ONCE`] run, a few more wait, and the rest are refused at
//! once, so a storm of logins cannot take the machine's memory.
//!
//! The guard: [`on_loop`] marks a future as event-loop work (every client connection, every
//! background task of the App). The store and the password hash call [`assert_off_loop`]
//! first; called inside such a future (rather than through [`run`], whose closure runs on
//! another thread), a debug build panics, so any test that reaches the store from a handler
//! fails, and a release build logs an error once.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Blocking closures running at once, at most. The store has one connection, so more would
/// only wait on its lock in a thread of their own.
pub const AT_ONCE: usize = 8;
/// Password hashes running at once, at most (argon2id: 19 MiB of memory each).
pub const HASHES_AT_ONCE: usize = 2;
/// Password hashes waiting for a turn, at most; past that a login is refused at once.
pub const HASHES_WAITING: usize = 8;

static BLOCKING: Semaphore = Semaphore::const_new(AT_ONCE);
static HASHES: Semaphore = Semaphore::const_new(HASHES_AT_ONCE);
static HASHES_QUEUED: AtomicUsize = AtomicUsize::new(0);

tokio::task_local! {
    /// Set while an event-loop future of the server is polled.
    static ON_LOOP: ();
}

/// Why blocking work did not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The closure panicked (already logged by the panic hook).
    #[error("a background task failed: {0}")]
    Failed(String),
    /// Too many password hashes are running or waiting: refused at once.
    #[error("too many logins at once; try again in a second")]
    Busy,
}

/// Run `f` on the blocking pool, at most [`AT_ONCE`] such closures at a time.
pub async fn run<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, Error> {
    // The semaphore is never closed, so acquiring cannot fail.
    let _permit = BLOCKING.acquire().await.ok();
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Failed(e.to_string()))
}

/// A turn to hash a password: waits while at most [`HASHES_WAITING`] others wait, else
/// [`Error::Busy`] at once. Hold it across the [`run`] that hashes.
pub async fn hash_permit() -> Result<SemaphorePermit<'static>, Error> {
    if let Ok(p) = HASHES.try_acquire() {
        return Ok(p);
    }
    if HASHES_QUEUED.fetch_add(1, Ordering::AcqRel) >= HASHES_WAITING {
        HASHES_QUEUED.fetch_sub(1, Ordering::AcqRel);
        return Err(Error::Busy);
    }
    let permit = HASHES.acquire().await;
    HASHES_QUEUED.fetch_sub(1, Ordering::AcqRel);
    permit.map_err(|_| Error::Busy)
}

/// Password hashes waiting for a turn now.
pub fn hashes_waiting() -> usize {
    HASHES_QUEUED.load(Ordering::Acquire)
}

/// Mark `fut` as event-loop work: blocking calls inside it (outside [`run`]) are caught.
pub fn on_loop<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    ON_LOOP.scope((), fut)
}

/// Whether the caller is event-loop work of the server.
pub fn is_on_loop() -> bool {
    ON_LOOP.try_with(|_| ()).is_ok()
}

/// Called first by everything that blocks (`what` names it). On the event loop: a panic in a
/// debug build, an error logged once in a release build.
pub fn assert_off_loop(what: &'static str) {
    if !is_on_loop() {
        return;
    }
    if cfg!(debug_assertions) {
        panic!("{what} on the event loop: run it through offload::run");
    }
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::error!(
            what,
            "blocking work on the event loop (a bug: please report it)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_guard_sees_event_loop_work_and_not_the_blocking_pool() {
        assert!(!is_on_loop(), "a plain task is not the server's");
        on_loop(async {
            assert!(is_on_loop());
            assert!(
                !run(is_on_loop).await.unwrap(),
                "run's closure is off the loop"
            );
        })
        .await;
    }

    #[tokio::test]
    #[cfg(debug_assertions)]
    async fn a_store_call_on_the_event_loop_panics_in_debug_builds() {
        let store = std::sync::Arc::new(crate::store::Store::memory().unwrap());
        let s = std::sync::Arc::clone(&store);
        assert!(
            run(move || s.setting("x").unwrap())
                .await
                .unwrap()
                .is_none()
        );
        let caught = tokio::spawn(on_loop(async move {
            let _ = store.setting("x");
        }))
        .await;
        assert!(caught.unwrap_err().is_panic());
    }

    #[tokio::test]
    async fn hashes_are_bounded_and_the_excess_refused_at_once() {
        let mut held = Vec::new();
        for _ in 0..HASHES_AT_ONCE {
            held.push(hash_permit().await.unwrap());
        }
        let waiting: Vec<_> = (0..HASHES_WAITING)
            .map(|_| tokio::spawn(async { hash_permit().await.map(drop) }))
            .collect();
        while hashes_waiting() < HASHES_WAITING {
            tokio::task::yield_now().await;
        }
        assert!(matches!(hash_permit().await, Err(Error::Busy)));
        drop(held);
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert!(hash_permit().await.is_ok());
    }
}
