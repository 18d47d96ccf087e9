use crate::model_arg;
use crate::steering_args::SteeringArgs;
use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::time::Duration;

/// Serve the Aligner over HTTP with the correction-strength knob per request: load the model
/// and its vectors once, batch the requests that arrive together (each row steered at its own
/// alpha), answer each exactly as `alens generate --json` would. Routes: POST /v1/correct,
/// POST /v1/chat/completions (OpenAI-compatible; strength in "steering": {"alpha": X}),
/// GET /v1/models, /health, /metrics, and the knob page at /. SIGINT or SIGTERM stops
/// taking requests (503), lets those in flight finish and exits 0.
///
/// Examples:
///   alens serve --model mini-aligner --port 8080
///   curl -s localhost:8080/v1/correct -d '{"question": "what colour is snow?", "answer": "snow is green.", "alpha": 0.5}'
///   alens serve --port 0 --max-batch 16 --max-queue 64    # port 0: a free port, printed
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    #[command(flatten)]
    model: model_arg::ModelArgs,
    #[command(flatten)]
    steering: SteeringArgs,
    /// Address to listen on; 127.0.0.1 keeps the server to this machine, 0.0.0.0 opens it to
    /// the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (printed as the URL).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Most requests run together in one batch. Bounds: 1 to 1,024.
    #[arg(long, value_parser = crate::bounds::count::<1, 1_024>, default_value_t = 32)]
    max_batch: usize,
    /// Most requests waiting for the model; beyond it a request gets 429 with Retry-After.
    /// Bounds: 1 to 1,000,000.
    #[arg(long, value_parser = crate::bounds::count::<1, 1_000_000>, default_value_t = 256)]
    max_queue: usize,
    /// Default and largest max_new_tokens a request may ask for. Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = 128)]
    max_new_tokens: usize,
    /// Largest request body in bytes; a larger one gets 413. Bounds: 1,024 to 16,777,216.
    #[arg(long, value_parser = crate::bounds::count::<1_024, 16_777_216>, default_value_t = 65_536)]
    body_limit: usize,
    /// Seconds a shutdown waits for the requests in flight. Bounds: 0 to 3,600.
    #[arg(long, value_parser = crate::bounds::count::<0, 3_600>, default_value_t = 30)]
    drain_seconds: usize,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let ckpt = args.model.load()?;
    let template = args.model.template()?;
    // A model with no vectors beside it is still served, unsteered (alpha 0 only), unless
    // --vectors asked for some.
    let steering = match args.steering.steering(&args.model, &ckpt) {
        Ok(steering) => Some(steering),
        Err(err) if args.steering.vectors.is_none() => {
            eprintln!("alens serve: no steering (only alpha 0): {err:#}");
            None
        }
        Err(err) => return Err(err),
    };
    let alphas = steering
        .as_ref()
        .map(steer::steering::Steering::default_alphas)
        .unwrap_or_else(|| vec![0.0]);
    let served = serve::Served {
        model_name: ckpt.name(),
        ckpt,
        template,
        steering,
        alphas,
    };
    let limits = serve::Limits {
        max_batch: args.max_batch,
        max_queue: args.max_queue,
        max_new_tokens: args.max_new_tokens,
        body_limit: args.body_limit,
        drain_deadline: Duration::from_secs(args.drain_seconds as u64),
    };
    // Two threads take the HTTP side; the model has its own thread and candle's pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let drained = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("could not listen on {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        println!("alens serve: listening on http://{address}");
        std::io::stdout().flush()?;
        serve::run(listener, served, limits, shutdown_signal()).await
    })?;
    if drained.abandoned > 0 {
        eprintln!(
            "alens serve: stopped with {} request(s) unfinished at the drain deadline",
            drained.abandoned
        );
    } else {
        eprintln!("alens serve: stopped");
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// SIGINT or SIGTERM (the process installs no other handler for `serve`).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    eprintln!("alens serve: shutting down; finishing the requests in flight");
}
