//! Work that may block — a database call, a password hash, a file write — runs here, off the
//! event loop, with bounded concurrency (SPEC 7: nothing blocks the event loop).
//!
//! [`run`] moves a closure to the blocking pool, at most [`AT_ONCE`] at a time (the rest wait
//! their turn as cheap futures, not as threads). [`hash`] runs password checks (argon2 takes
//! 19 MiB each) on [`HASHES_AT_ONCE`] threads of their own: a few more wait, and the rest are
//! refused at once, so a storm of logins cannot take the machine's memory. Their own threads,
//! because the allocator keeps a freed 19 MiB block in the arena of the thread that freed it:
//! hashed on the blocking pool, every pool thread kept one (a storm of 3,000 logins left
//! 471 MB behind, measured with `bench/eventloop.py`).
//!
//! The guard: [`on_loop`] marks a future as event-loop work (every client connection, every
//! background task of the App). The store and the password hash call [`assert_off_loop`]
//! first; called inside such a future (rather than through [`run`], whose closure runs on
//! another thread), a debug build panics, so any test that reaches the store from a handler
//! fails, and a release build logs an error once.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Semaphore;

/// Blocking closures running at once, at most. The store has one connection, so more would
/// only wait on its lock in a thread of their own.
pub const AT_ONCE: usize = 8;
/// Password hashes running at once, at most (argon2id: 19 MiB of memory each).
pub const HASHES_AT_ONCE: usize = 2;
/// Password hashes waiting for a turn, at most; past that a login is refused at once.
pub const HASHES_WAITING: usize = 8;

/// Turns on the blocking pool; a turn moves into the closure, so a caller that goes away does
/// not free it while its closure still runs.
static BLOCKING: std::sync::LazyLock<Arc<Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(Semaphore::new(AT_ONCE)));

/// A password check, boxed for the hashing threads.
type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads' queue: at most [`HASHES_WAITING`] jobs wait.
fn hashers() -> &'static SyncSender<Job> {
    static QUEUE: OnceLock<SyncSender<Job>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(HASHES_WAITING);
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        for i in 0..HASHES_AT_ONCE {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("freeway-hash-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(e) => e.into_inner().recv(),
                        };
                        match job {
                            // A check that panics loses its answer (the caller hears it
                            // failed), not the thread.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password-hashing thread");
            }
        }
        tx
    })
}

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
    let permit = Arc::clone(&BLOCKING).acquire_owned().await.ok();
    tokio::task::spawn_blocking(move || {
        POOL_THREAD.with(|p| p.set(true));
        let out = f();
        drop(permit);
        out
    })
    .await
    .map_err(|e| Error::Failed(e.to_string()))
}

/// Run `f`, which hashes a password, on a hashing thread: queued when called (not when first
/// polled); when [`HASHES_AT_ONCE`] run and [`HASHES_WAITING`] wait already, [`Error::Busy`]
/// at once.
pub fn hash<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> impl Future<Output = Result<R, Error>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let queued = match hashers().try_send(job) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => Err(Error::Busy),
        Err(TrySendError::Disconnected(_)) => {
            Err(Error::Failed("no password-hashing thread".into()))
        }
    };
    async move {
        queued?;
        rx.await
            .map_err(|_| Error::Failed("a password check failed".into()))
    }
}

thread_local! {
    /// Set on the blocking pool's threads once they ran a closure of [`run`].
    static POOL_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is one of the blocking pool's, running [`run`]'s closures: it may block,
/// even on a runtime of its own (a synchronous database client's).
pub fn on_pool_thread() -> bool {
    POOL_THREAD.with(std::cell::Cell::get)
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
        // Checks that wait for a go, until the threads and the waiting places are full.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        let mut held = Vec::new();
        loop {
            let wait = Arc::clone(&wait);
            let job = hash(move || {
                let _ = wait.lock().map(|w| w.recv());
                std::thread::current().name().map(str::to_string)
            });
            match tokio::time::timeout(std::time::Duration::from_millis(1), job).await {
                // Still waiting: it holds a thread or a waiting place.
                Err(_) => held.push(()),
                Ok(Err(Error::Busy)) => break,
                Ok(other) => panic!("a check ran while every thread waits: {other:?}"),
            }
            assert!(held.len() <= HASHES_AT_ONCE + HASHES_WAITING, "not bounded");
        }
        assert!(
            held.len() >= HASHES_WAITING,
            "refused too early: {}",
            held.len()
        );
        drop(held);
        for _ in 0..HASHES_AT_ONCE + HASHES_WAITING {
            let _ = go.send(());
        }
        // The released checks finish in their threads' time: a place frees up soon.
        let mut name = None;
        for _ in 0..10_000 {
            match hash(|| std::thread::current().name().map(str::to_string)).await {
                Ok(n) => {
                    name = n;
                    break;
                }
                Err(Error::Busy) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(name.is_some_and(|t| t.starts_with("freeway-hash-")));
    }
}
