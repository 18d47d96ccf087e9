//! The model's own thread and the queue that feeds it. Handlers validate and tokenize, then
//! hand a [`Job`] over a bounded queue; the thread takes every job waiting when it is free
//! (up to `max_batch`), runs them as one `generate_batch` with each row steered at its own
//! alpha ([`steer::steering::Steering::at_rows`]), and answers each job on its own channel.

use crate::metrics::Metrics;
use anyhow::Result;
use probe::{Checkpoint, NoHooks};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Instant;
use steer::generate::{aligner_output, generate_batch, Correction, GenerationConfig};
use steer::steering::Steering;
use tokio::sync::{mpsc, oneshot};

/// One request's work: a rendered, tokenized prompt and its strength.
pub struct Job {
    pub prompt: Vec<u32>,
    pub answer: String,
    pub alpha: f64,
    pub max_new_tokens: usize,
    pub reply: oneshot::Sender<Result<Correction, String>>,
}

/// What the model thread needs; it owns nothing else.
pub struct Engine {
    pub ckpt: Arc<Checkpoint>,
    pub steering: Option<Steering>,
    pub model_name: String,
    pub max_batch: usize,
    pub metrics: Arc<Metrics>,
}

/// Starts the model thread on `queue`; it ends when every sender is gone and the queue is
/// empty. The returned receiver fires once it has.
pub fn spawn(engine: Engine, mut queue: mpsc::Receiver<Job>) -> Result<std_mpsc::Receiver<()>> {
    let (done_tx, done_rx) = std_mpsc::channel();
    std::thread::Builder::new().name("alens-model".into()).spawn(move || {
        while let Some(first) = queue.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < engine.max_batch {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            engine.metrics.dequeued(jobs.len());
            // A caller that has gone away frees its row before the batch starts.
            jobs.retain(|j| !j.reply.is_closed());
            if jobs.is_empty() {
                continue;
            }
            engine.metrics.batch(jobs.len());
            engine.run(jobs);
        }
        let _ = done_tx.send(());
    })?;
    Ok(done_rx)
}

impl Engine {
    /// Runs `jobs` as one batch; if the batch fails (a model NaN), each job again alone, so
    /// only the request that causes it fails.
    fn run(&self, jobs: Vec<Job>) {
        let started = Instant::now();
        match self.generate(&jobs) {
            Ok(results) => {
                for (job, result) in jobs.into_iter().zip(results) {
                    self.answer(job, result);
                }
            }
            Err(_) if jobs.len() > 1 => {
                for job in jobs {
                    let result = self.generate(std::slice::from_ref(&job)).map(|mut r| r.remove(0));
                    self.answer(job, result.map_err(|e| format!("{e:#}")).and_then(|r| r));
                }
            }
            Err(err) => {
                for job in jobs {
                    self.answer(job, Err(format!("{err:#}")));
                }
            }
        }
        self.metrics.batch_seconds(started.elapsed().as_secs_f64());
    }

    fn answer(&self, job: Job, result: Result<Correction, String>) {
        if let Ok(c) = &result {
            self.metrics.generated(c.token_ids.len());
        }
        let _ = job.reply.send(result);
    }

    /// One forward loop for the whole batch, at the largest budget asked; each row is then
    /// cut to its own `max_new_tokens` (greedy decoding: a shorter budget's output is a prefix
    /// of a longer one's, so the cut is what the row would get alone).
    fn generate(&self, jobs: &[Job]) -> Result<Vec<Result<Correction, String>>> {
        let budget = jobs.iter().map(|j| j.max_new_tokens).max().unwrap_or(1);
        let config = GenerationConfig::greedy(budget, self.ckpt.eos_token_ids.clone());
        let prompts: Vec<Vec<u32>> = jobs.iter().map(|j| j.prompt.clone()).collect();
        let alphas: Vec<f64> = jobs.iter().map(|j| j.alpha).collect();
        let device = self.ckpt.model.device();
        let rows = match &self.steering {
            Some(steering) if alphas.iter().any(|&a| a != 0.0) => {
                let mut hook = steering.at_rows(&alphas, device)?;
                generate_batch(&self.ckpt.model, &prompts, &config, &mut hook)?
            }
            _ => generate_batch(&self.ckpt.model, &prompts, &config, &mut NoHooks)?,
        };
        let tokenizer = self.ckpt.tokenizer()?;
        Ok(jobs
            .iter()
            .zip(rows)
            .map(|(job, mut ids)| {
                ids.truncate(job.max_new_tokens);
                let out = aligner_output(tokenizer, ids, job.max_new_tokens).map_err(|e| format!("{e:#}"))?;
                Correction::new(tokenizer, &job.answer, out, job.alpha, &self.model_name).map_err(|e| format!("{e:#}"))
            })
            .collect())
    }
}
