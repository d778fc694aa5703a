//! The request log: rows handed over on the request path, written in batches by a background
//! task, so no request waits on the database.
//!
//! The channel is bounded; if the writer falls that far behind, rows are counted and dropped
//! rather than slowing requests. On shutdown the writer drains what is queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{RequestRow, Store};

/// Rows queued at most before new ones are dropped.
const QUEUE: usize = 16_384;
/// Rows written per transaction at most.
const BATCH: usize = 512;

/// The sending side, held by the App.
pub struct RequestLog {
    tx: mpsc::Sender<RequestRow>,
    dropped: AtomicU64,
    /// Fed from every finished row: the one place requests are counted.
    pub metrics: Metrics,
}

/// The receiving side, run by [`writer`].
pub struct Receiver(mpsc::Receiver<RequestRow>);

impl RequestLog {
    pub fn new() -> (RequestLog, Receiver) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            RequestLog {
                tx,
                dropped: AtomicU64::new(0),
                metrics: Metrics::default(),
            },
            Receiver(rx),
        )
    }

    /// Queue a row; never waits.
    pub fn record(&self, row: RequestRow) {
        self.metrics.observe(&row);
        if self.tx.try_send(row).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.log_dropped();
        }
    }

    /// Rows dropped because the writer was too far behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Write queued rows until `stop`, then drain the queue and return.
pub async fn writer(store: Arc<Store>, mut rx: Receiver, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            row = rx.0.recv() => row,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        // Let a burst gather for a moment so one transaction carries many rows.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while batch.len() < BATCH {
            match rx.0.try_recv() {
                Ok(row) => batch.push(row),
                Err(_) => break,
            }
        }
        write(&store, batch).await;
    }
    // Shutdown: whatever is still queued goes in now.
    let mut rest = Vec::new();
    while let Ok(row) = rx.0.try_recv() {
        rest.push(row);
    }
    for chunk in rest.chunks(BATCH) {
        write(&store, chunk.to_vec()).await;
    }
}

async fn write(store: &Arc<Store>, batch: Vec<RequestRow>) {
    let store = Arc::clone(store);
    let n = batch.len();
    match tokio::task::spawn_blocking(move || store.insert_requests(&batch)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(rows = n, error = %e, "could not write the request log"),
        Err(e) => tracing::error!(rows = n, error = %e, "request log writer failed"),
    }
}
