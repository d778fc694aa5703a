//! The request log: rows handed over on the request path, written in batches by a dedicated
//! thread, so no request waits on the database.
//!
//! The writer thread wakes on its own every [`TICK`] and drains the queue into one transaction.
//! A request only pushes onto a bounded queue: no thread is woken per request, which keeps the
//! CPU cost of logging flat at low rates and batched at high ones. If the writer falls a whole
//! queue behind, rows are counted as dropped rather than slowing requests. On shutdown the
//! writer drains what is queued before it exits.
//!
//! When the store cannot be reached (PostgreSQL down), the batch is kept and tried again every
//! [`RETRY`]; rows keep queueing meanwhile, and only those that find the queue full are dropped
//! (and counted). A batch the store refuses for another reason is logged and let go, so one bad
//! row cannot stop the log.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use crate::metrics::Metrics;
use crate::store::{RequestRow, Store};

/// Rows queued at most before new ones are dropped (a second of a heavy load).
const QUEUE: usize = 32_768;
/// Rows written per transaction at most.
const BATCH: usize = 4_096;
/// How often the writer wakes.
const TICK: Duration = Duration::from_millis(50);
/// How often a batch is tried again while the store cannot be reached.
const RETRY: Duration = Duration::from_secs(1);

/// The sending side, held by the App.
pub struct RequestLog {
    /// Unbounded underneath (it grows in small blocks as needed, where a bounded channel would
    /// allocate all its slots up front); `queued` enforces the bound.
    tx: Sender<RequestRow>,
    rx: std::sync::Mutex<Option<Receiver<RequestRow>>>,
    queued: Arc<AtomicUsize>,
    /// Fed from every finished row: the one place requests are counted.
    pub metrics: Metrics,
}

/// A running writer thread.
pub struct Writer {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

impl Default for RequestLog {
    fn default() -> Self {
        let (tx, rx) = channel();
        RequestLog {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            queued: Arc::new(AtomicUsize::new(0)),
            metrics: Metrics::default(),
        }
    }
}

impl RequestLog {
    /// Queue a row; never waits.
    pub fn record(&self, row: RequestRow) {
        self.metrics.observe(&row);
        let full = self.queued.fetch_add(1, Ordering::Relaxed) >= QUEUE;
        if full || self.tx.send(row).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.metrics.log_dropped();
        }
    }

    /// Start the writer thread (once; later calls return `None`).
    pub fn start(&self, store: Arc<Store>) -> Option<Writer> {
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let queued = Arc::clone(&self.queued);
        let dropped = self.metrics.log_dropped_counter();
        let handle = std::thread::Builder::new()
            .name("freeway-reqlog".into())
            .spawn(move || run(&store, &rx, &flag, &queued, &dropped))
            .ok()?;
        Some(Writer { stop, handle })
    }
}

impl Writer {
    /// Write what is queued and stop.
    pub fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.thread().unpark();
        if self.handle.join().is_err() {
            tracing::error!("the request log writer panicked");
        }
    }
}

fn run(
    store: &Store,
    rx: &Receiver<RequestRow>,
    stop: &AtomicBool,
    queued: &AtomicUsize,
    dropped: &prometheus_client::metrics::counter::Counter,
) {
    let mut batch = Vec::with_capacity(BATCH);
    // The store could not be reached at the last try: `batch` waits for it.
    let mut waiting = false;
    loop {
        // Read the flag before draining: rows queued before the stop are all written.
        let stopping = stop.load(Ordering::SeqCst);
        loop {
            let before = batch.len();
            batch.extend(rx.try_iter().take(BATCH - before));
            queued.fetch_sub(batch.len() - before, Ordering::Relaxed);
            if batch.is_empty() {
                break;
            }
            match store.insert_requests(&batch) {
                Ok(()) => {
                    if waiting {
                        tracing::info!("the store is back: request-log rows are written again");
                        waiting = false;
                    }
                }
                Err(e) if crate::store::is_unavailable(&e) => {
                    if stopping {
                        // Nothing more can be done for them: counted, not silently lost.
                        let lost = batch.len() + rx.try_iter().count();
                        dropped.inc_by(lost as u64);
                        tracing::error!(rows = lost, error = %e, "the store cannot be reached at shutdown: request-log rows lost");
                        return;
                    }
                    if !waiting {
                        tracing::warn!(rows = batch.len(), error = %e, "the store cannot be reached: request-log rows wait in memory");
                        waiting = true;
                    }
                    break;
                }
                Err(e) => {
                    // Not the store being away: one row the store refuses must not take the
                    // others with it. Row by row; what still fails is counted as dropped.
                    let lost = batch
                        .iter()
                        .filter(|row| store.insert_requests(std::slice::from_ref(*row)).is_err())
                        .count();
                    dropped.inc_by(lost as u64);
                    tracing::error!(rows = batch.len(), lost, error = %e, "could not write the request log as one batch");
                }
            }
            let full = batch.len() == BATCH;
            batch.clear();
            if !full {
                break;
            }
        }
        if stopping {
            return;
        }
        std::thread::park_timeout(if waiting { RETRY } else { TICK });
    }
}
