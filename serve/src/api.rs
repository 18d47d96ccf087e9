//! The HTTP face: routes that parse and validate a request, then hand it to the model's
//! queue. Every error becomes `{"error": "<one line>"}` with a fitting status.

use crate::engine::Job;
use crate::metrics::Metrics;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use probe::{AlignerTemplate, Checkpoint};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use steer::generate::Correction;
use tokio::sync::{mpsc, oneshot};

/// What every handler shares.
pub struct AppState {
    pub ckpt: Arc<Checkpoint>,
    pub template: AlignerTemplate,
    pub model_name: String,
    pub queue: mpsc::Sender<Job>,
    pub metrics: Arc<Metrics>,
    /// The strengths a request may ask for: the vector file's grid's span; `None` without
    /// vectors (then only alpha 0, unsteered).
    pub alpha_range: Option<(f64, f64)>,
    /// The vector file's default grid, for the knob page's side-by-side view.
    pub alpha_grid: Vec<f64>,
    pub max_new_tokens: usize,
    pub shutting_down: AtomicBool,
    pub in_flight: AtomicUsize,
}

/// An error as the API returns it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        // One line, whatever the source said.
        let message = message.into().lines().map(str::trim).collect::<Vec<_>>().join(" ");
        Self {
            status,
            message,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(json!({"error": self.message}))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Parses a JSON body into `T`: 400 for a body that is not JSON, 422 for a JSON body of the
/// wrong shape (serde's message names the field: missing, unknown or of the wrong type).
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        let hint = non_json_number(body)
            .map(|(field, word)| format!(" (field `{field}`: {word} is not a JSON number)"))
            .unwrap_or_default();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}{hint}"),
        )
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    })
}

/// The field holding a NaN or an infinity, which JSON cannot carry but some encoders write.
fn non_json_number(body: &[u8]) -> Option<(String, &'static str)> {
    let text = std::str::from_utf8(body).ok()?;
    for word in ["NaN", "-Infinity", "Infinity"] {
        if let Some(at) = text
            .find(&format!(":{word}"))
            .or_else(|| text.find(&format!(": {word}")))
        {
            let before = text[..at].trim_end().strip_suffix('"')?;
            let start = before.rfind('"')? + 1;
            return Some((before[start..].to_string(), word));
        }
    }
    None
}

/// `POST /v1/correct`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrectRequest {
    pub question: String,
    pub answer: String,
    #[serde(default)]
    pub alpha: f64,
    pub max_new_tokens: Option<usize>,
}

pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/config", get(config))
        .route("/v1/correct", post(correct))
        .route("/v1/chat/completions", post(chat))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route; see GET / and /v1/models") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], crate::PAGE)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.shutting_down.load(Ordering::SeqCst) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    axum::Json(json!({"status": "ok", "model": state.model_name})).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let in_flight = state.in_flight.load(Ordering::SeqCst);
    let text = format!(
        "{}# HELP alens_requests_in_flight Requests accepted and not yet answered.\n\
         # TYPE alens_requests_in_flight gauge\nalens_requests_in_flight {in_flight}\n",
        state.metrics.render()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn models(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(
        json!({"object": "list", "data": [{"id": state.model_name, "object": "model", "created": 0, "owned_by": "alens"}]}),
    )
}

/// What the knob page needs: the alpha range, the default grid, the model.
async fn config(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let (lo, hi) = state.alpha_range.unwrap_or((0.0, 0.0));
    axum::Json(
        json!({"model": state.model_name, "alpha_min": lo, "alpha_max": hi, "alphas": state.alpha_grid, "max_new_tokens": state.max_new_tokens}),
    )
}

/// Counts a request in flight while it lives, so shutdown can wait for it.
struct InFlight(Arc<AppState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AppState {
    fn check_alpha(&self, field: &str, alpha: f64) -> ApiResult<()> {
        if let Err(e) = steer::steering::check_alpha(alpha) {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{field}: {e}")));
        }
        match self.alpha_range {
            Some((lo, hi)) if alpha < lo || alpha > hi => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{field} must be within the vector file's range [{lo}, {hi}], got {alpha}"),
            )),
            None if alpha != 0.0 => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{field} must be 0: this server has no steering vectors"),
            )),
            _ => Ok(()),
        }
    }

    /// Validates, queues and waits for one correction.
    async fn run(
        self: &Arc<Self>,
        question: &str,
        answer: &str,
        alpha: f64,
        max_new_tokens: Option<usize>,
        fields: [&str; 2],
    ) -> ApiResult<Correction> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down: not taking new requests",
            ));
        }
        self.check_alpha(fields[0], alpha)?;
        let max_new_tokens = max_new_tokens.unwrap_or(self.max_new_tokens);
        if max_new_tokens == 0 || max_new_tokens > self.max_new_tokens {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "{} must be between 1 and {} (the server's --max-new-tokens), got {max_new_tokens}",
                    fields[1], self.max_new_tokens
                ),
            ));
        }
        let tokenizer = self
            .ckpt
            .tokenizer()
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
        let prompt = tokenizer
            .encode(&self.template.render(question, answer))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("could not tokenize the prompt: {e:#}")))?;
        let context = self.ckpt.config.max_position_embeddings;
        if prompt.len() > context {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "the prompt has {} tokens, more than the model's context of {context}",
                    prompt.len()
                ),
            ));
        }
        let (reply, answered) = oneshot::channel();
        let job = Job {
            prompt,
            answer: answer.to_string(),
            alpha,
            max_new_tokens,
            reply,
        };
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _guard = InFlight(self.clone());
        match self.queue.try_send(job) {
            Ok(()) => self.metrics.enqueued(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "the queue is full; retry shortly");
                e.retry_after = Some(1);
                return Err(e);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model has stopped"))
            }
        }
        match answered.await {
            Ok(Ok(correction)) => Ok(correction),
            Ok(Err(message)) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)),
            Err(_) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the model thread dropped this request",
            )),
        }
    }
}

/// Times and counts a finished response.
fn counted(state: &AppState, route: &str, started: Instant, response: Response) -> Response {
    state
        .metrics
        .request(route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// The body, or the error for one over the limit (413) or cut off.
fn body_of(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the body is over the server's size limit".to_string()
        } else {
            format!("could not read the body: {}", rejection.body_text())
        };
        ApiError::new(status, message)
    })
}

async fn correct(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let result = async {
        let req: CorrectRequest = parse(&body_of(body)?)?;
        state
            .run(
                &req.question,
                &req.answer,
                req.alpha,
                req.max_new_tokens,
                ["alpha", "max_new_tokens"],
            )
            .await
    }
    .await;
    let response = match result {
        Ok(c) => axum::Json(c).into_response(),
        Err(e) => e.into_response(),
    };
    counted(&state, "/v1/correct", started, response)
}

/// An OpenAI chat message; content may be a string or a list of text parts.
#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: serde_json::Value,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SteeringField {
    #[serde(default)]
    alpha: f64,
}

/// The OpenAI request fields read here; the rest of OpenAI's (temperature, user, ...) are
/// accepted and ignored, as decoding is greedy.
#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    steering: SteeringField,
    #[serde(default, alias = "max_completion_tokens")]
    max_tokens: Option<usize>,
}

fn text_of(content: &serde_json::Value, field: &str) -> ApiResult<String> {
    match content {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Array(parts) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
            .collect::<Vec<_>>()
            .join("")),
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field} must be a string or a list of text parts"),
        )),
    }
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

/// Makes completion ids unique within a nanosecond.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

async fn chat(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let result = async {
        let req: ChatRequest = parse(&body_of(body)?)?;
        if let Some(model) = &req.model {
            if !model.is_empty() && *model != state.model_name {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("model: this server serves {}, not {model}", state.model_name),
                ));
            }
        }
        let Some(a) = req.messages.iter().rposition(|m| m.role == "assistant") else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "messages: needs an assistant message (the answer to correct)",
            ));
        };
        let Some(u) = req.messages[..a].iter().rposition(|m| m.role == "user") else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "messages: needs a user message (the question) before the assistant's",
            ));
        };
        let answer = text_of(&req.messages[a].content, &format!("messages[{a}].content"))?;
        let question = text_of(&req.messages[u].content, &format!("messages[{u}].content"))?;
        let c = state
            .run(
                &question,
                &answer,
                req.steering.alpha,
                req.max_tokens,
                ["steering.alpha", "max_tokens"],
            )
            .await?;
        let prompt_tokens = state
            .ckpt
            .tokenizer()
            .and_then(|t| t.encode(&state.template.render(&question, &answer)))
            .map(|p| p.len())
            .unwrap_or(0);
        Ok((req.stream, c, prompt_tokens))
    }
    .await;
    let response = match result {
        Err(e) => e.into_response(),
        Ok((stream, c, prompt_tokens)) => {
            let usage = Usage {
                prompt_tokens,
                completion_tokens: c.token_ids.len(),
                total_tokens: prompt_tokens + c.token_ids.len(),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let id = format!(
                "chatcmpl-{:x}{:04x}",
                now.as_nanos(),
                NEXT_ID.fetch_add(1, Ordering::Relaxed) & 0xffff
            );
            let created = now.as_secs();
            if stream {
                sse(&id, created, &c, &usage)
            } else {
                axum::Json(json!({
                    "id": id, "object": "chat.completion", "created": created, "model": c.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": c.output}, "finish_reason": c.finish_reason}],
                    "usage": usage,
                    "correction": c,
                }))
                .into_response()
            }
        }
    };
    counted(&state, "/v1/chat/completions", started, response)
}

/// The answer as server-sent events, OpenAI's chunk shape: the role, the content, the finish
/// reason with usage, then `[DONE]`. The model thread answers whole rows, so the content
/// comes in one chunk.
fn sse(id: &str, created: u64, c: &Correction, usage: &Usage) -> Response {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": c.model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut last = chunk(json!({}), Some(&c.finish_reason));
    last["usage"] = serde_json::to_value(usage).unwrap_or_default();
    let events = [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": c.output}), None),
        last,
    ];
    let mut body = String::new();
    for event in events {
        body.push_str(&format!("data: {event}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_or_infinity_is_named_by_its_field() {
        assert_eq!(
            non_json_number(br#"{"question": "q", "alpha": NaN}"#),
            Some(("alpha".to_string(), "NaN"))
        );
        assert_eq!(
            non_json_number(br#"{"alpha":-Infinity}"#),
            Some(("alpha".to_string(), "-Infinity"))
        );
        assert_eq!(non_json_number(br#"{"alpha": 1}"#), None);
        let err = parse::<CorrectRequest>(br#"{"question": "q", "answer": "a", "alpha": Infinity}"#)
            .err()
            .unwrap();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("field `alpha`"), "{}", err.message);
    }

    #[test]
    fn shape_errors_name_the_field_path() {
        let err = parse::<CorrectRequest>(br#"{"question": "q", "answer": "a", "alpha": "x"}"#)
            .err()
            .unwrap();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.message.starts_with("alpha: invalid type"), "{}", err.message);
        let err = parse::<CorrectRequest>(br#"{"question": "q", "answer": "a", "extra": 1}"#)
            .err()
            .unwrap();
        assert!(err.message.contains("unknown field `extra`"), "{}", err.message);
    }

    #[test]
    fn errors_are_one_line() {
        assert_eq!(ApiError::new(StatusCode::BAD_REQUEST, "a\n  b\nc").message, "a b c");
    }
}
