//! A request that makes the model produce NaN fails alone (500); requests batched with it,
//! and later ones, are answered as usual.

mod serve_support;

use serde_json::json;
use serve_support::Server;
use std::sync::Arc;

/// A vector file whose layer-2 vector overflows f32 at alpha 8 (+-inf in the residual
/// stream, NaN after the next norm), fine at alpha 0.
fn overflowing_vectors(dir: &std::path::Path) -> std::path::PathBuf {
    let values: Vec<f32> = (0..128).map(|i| if i % 2 == 0 { 1e38 } else { -1e38 }).collect();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![128], &bytes).unwrap();
    let path = dir.join("overflow.safetensors");
    safetensors::serialize_to_file([("layers.2", view)], None, &path).unwrap();
    path
}

#[test]
fn a_model_nan_fails_only_its_own_request() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = overflowing_vectors(dir.path());
    let server = Arc::new(Server::start(&[
        "--vectors",
        vectors.to_str().unwrap(),
        "--layers",
        "2",
        "--max-batch",
        "8",
    ]));
    let body = |alpha: f64| {
        json!({"question": "how many legs has a dog got?", "answer": "a dog has four legs.", "alpha": alpha})
            .to_string()
    };

    let (status, value) = server.post("/v1/correct", &body(8.0));
    assert_eq!(status, 500, "{value}");
    let error = value["error"].as_str().unwrap();
    assert!(error.contains("non-finite") || error.contains("too large"), "{value}");

    let alone = server.post("/v1/correct", &body(0.0));
    assert_eq!(alone.0, 200, "{}", alone.1);

    // Mixed in one batch: the NaN row fails, the others get what they get alone.
    let handles: Vec<_> = (0..8)
        .map(|k| {
            let (server, body) = (server.clone(), body(if k % 4 == 0 { 8.0 } else { 0.0 }));
            std::thread::spawn(move || server.post("/v1/correct", &body))
        })
        .collect();
    for (k, h) in handles.into_iter().enumerate() {
        let (status, value) = h.join().unwrap();
        if k % 4 == 0 {
            assert_eq!(status, 500, "{value}");
        } else {
            assert_eq!((status, &value), (200, &alone.1), "row {k}");
        }
    }
    assert_eq!(server.get("/health").0, 200);
}
