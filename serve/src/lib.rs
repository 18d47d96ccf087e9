//! `alens serve` as a library: the correction-strength knob over HTTP. It takes a loaded
//! checkpoint, optional steering (the vectors and their default settings), limits and a bound
//! listener, and serves until told to shut down; it knows nothing of flags or signals (the
//! binary brings both).
//!
//! Requests are validated and tokenized by the handlers, then queued for the model's own
//! thread, which batches every request waiting when it is free and steers each row at its
//! own alpha in the same forward. A response is token for token what the request gets alone.
//! Not for: sampling (decoding is greedy, so responses are reproducible), several models.
//!
//! Errors are `{"error": "<one line>"}`: 400 for a body that is not JSON (a NaN or infinity
//! named by its field) or a prompt beyond the model's context; 422 for a missing, unknown or
//! mistyped field and an alpha outside the vector file's grid (its field named); 404 for an
//! unknown route or model; 413 over the body limit; 429 with `Retry-After` when the queue is
//! full; 503 while shutting down; 500 when the model fails a request (a non-finite logit),
//! for that request only: a failed batch is rerun row by row.

mod api;
mod engine;
mod metrics;

use anyhow::{Context, Result};
use api::AppState;
use probe::{AlignerTemplate, Checkpoint};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use steer::steering::Steering;

/// The knob page, served at `/`.
pub const PAGE: &str = include_str!("../page/index.html");

/// The server's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rows per model batch.
    pub max_batch: usize,
    /// Requests waiting beyond those running; one more is refused with 429.
    pub max_queue: usize,
    /// The default and largest `max_new_tokens` a request may ask for.
    pub max_new_tokens: usize,
    /// Request bodies over this many bytes are refused with 413.
    pub body_limit: usize,
    /// How long shutdown waits for requests in flight.
    pub drain_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_queue: 256,
            max_new_tokens: 128,
            body_limit: 64 * 1024,
            drain_deadline: Duration::from_secs(30),
        }
    }
}

/// What to serve.
pub struct Served {
    pub ckpt: Checkpoint,
    pub template: AlignerTemplate,
    /// The vectors and their settings; without them only alpha 0 is served.
    pub steering: Option<Steering>,
    /// The strengths requests may ask for (the vector file's grid).
    pub alphas: Vec<f64>,
    /// The name responses report (`"model"`), as `alens generate --json` does.
    pub model_name: String,
}

/// How a served run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Requests still in flight when the drain deadline passed (0: all finished).
    pub abandoned: usize,
}

/// Serves on `listener` until `shutdown` resolves; then refuses new requests with 503, waits
/// for those in flight (up to `limits.drain_deadline`) and returns.
pub async fn run(
    listener: tokio::net::TcpListener,
    served: Served,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Drained> {
    if limits.max_batch == 0 || limits.max_queue == 0 || limits.max_new_tokens == 0 {
        anyhow::bail!("max batch, max queue and max new tokens must each be at least 1");
    }
    let ckpt = Arc::new(served.ckpt);
    ckpt.tokenizer().context("serving needs the model's tokenizer")?;
    let metrics = Arc::new(metrics::Metrics::default());
    let (queue, jobs) = tokio::sync::mpsc::channel(limits.max_queue);
    let engine = engine::Engine {
        ckpt: ckpt.clone(),
        steering: served.steering.clone(),
        model_name: served.model_name.clone(),
        max_batch: limits.max_batch,
        metrics: metrics.clone(),
    };
    let model_done = engine::spawn(engine, jobs).context("could not start the model thread")?;
    let alpha_range = served.steering.as_ref().map(|_| {
        let lo = served.alphas.iter().copied().fold(0.0, f64::min);
        let hi = served.alphas.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    });
    let state = Arc::new(AppState {
        ckpt,
        template: served.template,
        model_name: served.model_name,
        queue,
        metrics,
        alpha_range,
        alpha_grid: if served.steering.is_some() {
            served.alphas
        } else {
            vec![0.0]
        },
        max_new_tokens: limits.max_new_tokens,
        shutting_down: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
    });
    let app = api::router(state.clone(), limits.body_limit);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_state = state.clone();
    let deadline = limits.drain_deadline;
    let drained = tokio::spawn(async move {
        shutdown.await;
        drain_state.shutting_down.store(true, Ordering::SeqCst);
        let until = Instant::now() + deadline;
        while drain_state.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let abandoned = drain_state.in_flight.load(Ordering::SeqCst);
        let _ = stop_tx.send(());
        abandoned
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    // Connections kept alive by idle clients may hold graceful shutdown open: bound it too.
    let serving = tokio::spawn(async move { server.await });
    let abandoned = drained.await.unwrap_or(0);
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(2), serving).await {
        return Err(e).context("the HTTP server failed");
    }
    // The model thread ends once the queue's last sender (the state) is gone.
    drop(state);
    let _ = tokio::task::spawn_blocking(move || model_done.recv_timeout(Duration::from_secs(1))).await;
    Ok(Drained { abandoned })
}
