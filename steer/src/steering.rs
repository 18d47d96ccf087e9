//! The correction-strength knob: move the residual stream along the copy/correct direction
//! at chosen layers and positions.
//!
//! Two modes. `add` adds `alpha * v_l` (repeng, Aligner's Fig. 4): alpha = 1 is the vector
//! in the file. `project` moves each steered state's projection on the unit direction `u_l`
//! toward a class mean read by LAT: alpha = +1 sets it to the correct-class mean, -1 to the
//! copy-class mean, fractions go part of the way, and each unit beyond 1 moves one class gap
//! (correct mean - copy mean) further. The push is sized from where the state already is, so
//! the state stays where the model's own data lies instead of being thrown off it.
//!
//! By default the vector is added at `blocks.{l}.hook_resid_post`, the output of decoder
//! layer l, which is exactly what a forward hook on HF's `model.layers[l]` sees, so a vector
//! behaves here as it does in PyTorch (and in llama.cpp as `direction.{l}`).

pub use crate::mode::{SteerMode, SteerPositions};
use crate::vectors::ControlVectors;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use probe::hooks::{HookPoint, Hooks, Site};
use std::collections::BTreeMap;

/// A steering intervention as plain data (repeng's `ControlVector` + `set_control`): which
/// vectors, at which layers and site, on which positions. `at(alpha)` is the hook for one
/// strength; the same value serves every batch and every alpha of a sweep.
#[derive(Debug, Clone)]
pub struct Steering {
    pub vectors: ControlVectors,
    pub layers: Vec<usize>,
    pub site: Site,
    pub positions: SteerPositions,
    pub mode: SteerMode,
    /// Project mode's control: the displacement the real direction calls for, applied along
    /// these random unit directions instead (so the push has the same size, not the same way).
    pub displace_along: Option<BTreeMap<usize, Vec<f32>>>,
}

impl Steering {
    /// Checks that `vectors` has every layer asked for, and the class means `project` needs.
    pub fn new(
        vectors: ControlVectors,
        layers: Vec<usize>,
        site: Site,
        positions: SteerPositions,
        mode: SteerMode,
    ) -> Result<Self> {
        if let Some(missing) = layers.iter().find(|l| !vectors.vectors.contains_key(l)) {
            let have: Vec<usize> = vectors.vectors.keys().copied().collect();
            bail!("the vector file has no vector for layer {missing} (it has {have:?})");
        }
        if mode == SteerMode::Project {
            for &layer in &layers {
                vectors.class_means(layer)?;
            }
        }
        Ok(Self {
            vectors,
            layers,
            site,
            positions,
            mode,
            displace_along: None,
        })
    }

    /// Steering with what the caller leaves open taken from the vector file's sidecar: the
    /// layers (its `default_layers`), the mode and the positions (else add, at every position).
    /// What `alens generate`, `alens sweep`, the server and the Python package all build.
    pub fn with_sidecar_defaults(
        vectors: ControlVectors,
        layers: Option<Vec<usize>>,
        site: Site,
        positions: Option<SteerPositions>,
        mode: Option<SteerMode>,
    ) -> Result<Self> {
        let meta = vectors.metadata.as_ref();
        let mode = mode.or(meta.and_then(|m| m.steer_mode)).unwrap_or(SteerMode::Add);
        let positions = positions
            .or(meta.and_then(|m| m.steer_positions))
            .unwrap_or(SteerPositions::All);
        let layers = layers.unwrap_or_else(|| vectors.default_layers());
        Self::new(vectors, layers, site, positions, mode)
    }

    /// The sweep grid when none is given: the vector file's, else the mode's.
    pub fn default_alphas(&self) -> Vec<f64> {
        match self.vectors.metadata.as_ref() {
            Some(m) if !m.alphas.is_empty() => m.alphas.clone(),
            _ => self.mode.default_alphas(),
        }
    }

    /// The control: at every steered layer a random direction (seeded). In add mode it
    /// replaces the vector with the same norm, so alpha means the same push; in project mode
    /// it receives the displacement the real direction computes.
    pub fn random_like(&self, seed: u64) -> Result<Self> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut random = BTreeMap::new();
        for &layer in &self.layers {
            let v = &self.vectors.vectors[&layer];
            let norm = match self.mode {
                SteerMode::Add => v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt(),
                SteerMode::Project => 1.0,
            };
            let draw: Vec<f64> = (0..v.len()).map(|_| StandardNormal.sample(&mut rng)).collect();
            let draw_norm = draw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            random.insert(layer, draw.iter().map(|x| (x * norm / draw_norm) as f32).collect());
        }
        match self.mode {
            SteerMode::Add => Steering::new(
                ControlVectors {
                    vectors: random,
                    metadata: None,
                },
                self.layers.clone(),
                self.site,
                self.positions,
                self.mode,
            ),
            SteerMode::Project => Ok(Self {
                displace_along: Some(random),
                ..self.clone()
            }),
        }
    }

    /// The hook steering with strength `alpha`. Alpha 0 changes nothing at all, so an
    /// unsteered run and an alpha-0 run are bit-identical.
    pub fn at(&self, alpha: f64, device: &Device) -> Result<SteeringHook> {
        let mut hook = SteeringHook::new(self.site, self.positions);
        match self.mode {
            SteerMode::Add => hook.add(&self.vectors, &self.layers, alpha, device)?,
            SteerMode::Project => hook.project(self, alpha, device)?,
        }
        Ok(hook)
    }

    /// One hook steering each batch row with its own strength: row `r` of every forward gets
    /// exactly what [`Steering::at`]`(alphas[r])` gives a batch of one (the same vector
    /// scaled the same way, the same projection arithmetic), so a request's output does not
    /// depend on the strengths of the rows beside it. The hook refuses a batch of another size.
    pub fn at_rows(&self, alphas: &[f64], device: &Device) -> Result<SteeringHook> {
        if alphas.is_empty() {
            bail!("at_rows needs one alpha per batch row, got none");
        }
        for &alpha in alphas {
            check_alpha(alpha)?;
        }
        let mut hook = SteeringHook::new(self.site, self.positions);
        hook.rows = Some(alphas.len());
        if alphas.iter().all(|&a| a == 0.0) {
            return Ok(hook);
        }
        match self.mode {
            SteerMode::Add => {
                for &layer in &self.layers {
                    let v = &self.vectors.vectors[&layer];
                    let unit = Tensor::new(v.as_slice(), device)?;
                    // Each row scaled as `add` scales a single alpha; alpha 0 adds exact zeros.
                    let rows: Vec<Tensor> = alphas
                        .iter()
                        .map(|&a| if a == 0.0 { unit.zeros_like() } else { unit.clone() * a })
                        .collect::<candle_core::Result<_>>()?;
                    hook.additions.insert(layer, Tensor::stack(&rows, 0)?.unsqueeze(1)?);
                }
            }
            SteerMode::Project => {
                for &alpha in alphas {
                    let mut row = SteeringHook::new(self.site, self.positions);
                    row.project(self, alpha, device)?;
                    hook.row_projections.push(row.projections);
                }
            }
        }
        Ok(hook)
    }
}

/// Project mode at one layer: the unit direction, where the displacement goes (the same
/// direction, or a random one for the control), and how far it moves a projection.
struct Projection {
    direction: Tensor,
    displace_along: Tensor,
    shift: ProjectionShift,
}

/// How project mode moves a projection p for one alpha: a share `min(|alpha|, 1)` of the way
/// to the target class mean, never backwards (a state already past the target is left where
/// it is, so a negative alpha never makes a state more correct), then one class gap further
/// per unit of |alpha| beyond 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProjectionShift {
    share: f64,
    target: f64,
    /// The signed extra shift beyond the target.
    beyond: f64,
    toward_correct: bool,
}

impl ProjectionShift {
    pub fn new(alpha: f64, copy_mean: f64, correct_mean: f64) -> Self {
        let gap = (correct_mean - copy_mean).abs();
        let toward_correct = alpha >= 0.0;
        let extra = (alpha.abs() - 1.0).max(0.0) * gap;
        Self {
            share: alpha.abs().min(1.0),
            target: if toward_correct { correct_mean } else { copy_mean },
            beyond: if toward_correct { extra } else { -extra },
            toward_correct,
        }
    }

    /// The displacement of projection `p`.
    pub fn displacement(&self, p: f64) -> f64 {
        let toward = self.share * (self.target - p);
        let toward = if self.toward_correct {
            toward.max(0.0)
        } else {
            toward.min(0.0)
        };
        toward + self.beyond
    }

    /// The same, on a tensor of projections.
    fn displacement_of(&self, p: &Tensor) -> Result<Tensor> {
        let toward = p.affine(-self.share, self.share * self.target)?;
        let toward = if self.toward_correct {
            toward.maximum(0.0)?
        } else {
            toward.minimum(0.0)?
        };
        Ok((toward + self.beyond)?)
    }
}

/// Adds the sum of `alpha * vector` of every composed control vector at its layers.
pub struct SteeringHook {
    site: Site,
    positions: SteerPositions,
    additions: BTreeMap<usize, Tensor>,
    projections: BTreeMap<usize, Projection>,
    /// Per-row project mode ([`Steering::at_rows`]): row r's maps (empty for alpha 0).
    row_projections: Vec<BTreeMap<usize, Projection>>,
    /// The batch size a per-row hook was made for.
    rows: Option<usize>,
    /// Whether the current forward pass is one this hook steers (set by `begin_forward`).
    active: bool,
}

impl SteeringHook {
    pub fn new(site: Site, positions: SteerPositions) -> Self {
        Self {
            site,
            positions,
            additions: BTreeMap::new(),
            projections: BTreeMap::new(),
            row_projections: Vec::new(),
            rows: None,
            active: true,
        }
    }

    /// Sets project mode's maps for `alpha` at every layer of `steering`.
    fn project(&mut self, steering: &Steering, alpha: f64, device: &Device) -> Result<()> {
        check_alpha(alpha)?;
        if alpha == 0.0 {
            return Ok(());
        }
        for &layer in &steering.layers {
            let v = &steering.vectors.vectors[&layer];
            let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(1e-30);
            let unit: Vec<f32> = v.iter().map(|x| (*x as f64 / norm) as f32).collect();
            let (copy_mean, correct_mean) = steering.vectors.class_means(layer)?;
            let shift = ProjectionShift::new(alpha, copy_mean, correct_mean);
            let direction = Tensor::new(unit.as_slice(), device)?;
            let displace_along = match steering.displace_along.as_ref().and_then(|r| r.get(&layer)) {
                Some(random) => Tensor::new(random.as_slice(), device)?,
                None => direction.clone(),
            };
            self.projections.insert(
                layer,
                Projection {
                    direction,
                    displace_along,
                    shift,
                },
            );
        }
        Ok(())
    }

    /// The steered activation at `layer`, for the positions this hook steers in `activation`
    /// (`[batch, seq, d]`).
    fn steer(&self, layer: usize, activation: &Tensor) -> Result<Option<Tensor>> {
        if let Some(rows) = self.rows {
            let batch = activation.dim(0)?;
            if batch != rows {
                bail!("this steering hook was made for {rows} batch rows, the forward has {batch}");
            }
        }
        let dtype = activation.dtype();
        let project = |p: &Projection, h: &Tensor| -> Result<Tensor> {
            let u = p.direction.to_dtype(dtype)?;
            let projection = h.broadcast_matmul(&u.unsqueeze(1)?)?;
            let displacement = p.shift.displacement_of(&projection)?;
            Ok((h + displacement.broadcast_mul(&p.displace_along.to_dtype(dtype)?)?)?)
        };
        let delta = |h: &Tensor| -> Result<Option<Tensor>> {
            if let Some(v) = self.additions.get(&layer) {
                return Ok(Some(h.broadcast_add(&v.to_dtype(dtype)?)?));
            }
            if !self.row_projections.is_empty() {
                // Row by row, so each row goes through the arithmetic a batch of one does.
                let rows = (0..h.dim(0)?)
                    .map(|r| {
                        let row = h.narrow(0, r, 1)?;
                        match self.row_projections[r].get(&layer) {
                            Some(p) => project(p, &row),
                            None => Ok(row),
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                return Ok(Some(Tensor::cat(&rows, 0)?));
            }
            let Some(p) = self.projections.get(&layer) else {
                return Ok(None);
            };
            Ok(Some(project(p, h)?))
        };
        if self.positions != SteerPositions::Decision {
            return delta(activation);
        }
        // Prompts are left-padded, so every row's last prompt token is the last position.
        let seq = activation.dim(1)?;
        let last = activation.narrow(1, seq - 1, 1)?;
        Ok(match delta(&last)? {
            Some(steered) if seq > 1 => Some(Tensor::cat(&[&activation.narrow(1, 0, seq - 1)?, &steered], 1)?),
            other => other,
        })
    }

    /// Composes `alpha * vectors[l]` for each `l` in `layers`; adding several vector files
    /// sums them.
    pub fn add(&mut self, vectors: &ControlVectors, layers: &[usize], alpha: f64, device: &Device) -> Result<()> {
        check_alpha(alpha)?;
        for &layer in layers {
            let Some(v) = vectors.vectors.get(&layer) else {
                let have: Vec<usize> = vectors.vectors.keys().copied().collect();
                bail!("the vector file has no vector for layer {layer} (it has {have:?})");
            };
            if alpha == 0.0 {
                continue;
            }
            let scaled = (Tensor::new(v.as_slice(), device)? * alpha)?;
            let total = match self.additions.remove(&layer) {
                Some(existing) => (existing + scaled)?,
                None => scaled,
            };
            self.additions.insert(layer, total);
        }
        Ok(())
    }
}

impl Hooks for SteeringHook {
    fn begin_forward(&mut self, cached_len: usize) {
        self.active = match self.positions {
            SteerPositions::All => true,
            SteerPositions::Prompt => cached_len == 0,
            SteerPositions::Generated => cached_len > 0,
            SteerPositions::Decision => cached_len == 0,
        };
    }

    fn wants(&self, point: HookPoint) -> bool {
        match point {
            HookPoint::Block { layer, site } => {
                self.active
                    && site == self.site
                    && (self.additions.contains_key(&layer)
                        || self.projections.contains_key(&layer)
                        || self.row_projections.iter().any(|r| r.contains_key(&layer)))
            }
            _ => false,
        }
    }

    fn on(&mut self, point: HookPoint, activation: &Tensor) -> Result<Option<Tensor>> {
        let Some(layer) = point.layer() else { return Ok(None) };
        let steered = self.steer(layer, activation)?;
        if let Some(h) = &steered {
            // The next RMSNorm squares every value in f32: past sqrt(f32::MAX) the square is
            // infinite, the norm divides by it, and the model goes on from zeros to an empty
            // answer that looks like a result. A push that large is refused where it happens.
            let peak = h.abs()?.max_all()?.to_scalar::<f32>()?;
            if !peak.is_finite() || peak > f32::MAX.sqrt() || h.sum_all()?.to_scalar::<f32>()?.is_nan() {
                bail!(
                    "steering at layer {layer} pushed the residual stream to {peak:e}, past what the forward can square in f32 \
                     (about 1.8e19): the vector or alpha is too large for this model"
                );
            }
        }
        Ok(steered)
    }
}

/// The one range check of a steering strength, for every mode and every way alpha comes in.
/// The largest |alpha| accepted: far beyond any useful push in either mode's unit.
pub const MAX_ALPHA: f64 = 1e6;

pub fn check_alpha(alpha: f64) -> Result<()> {
    if !alpha.is_finite() || alpha.abs() > MAX_ALPHA {
        bail!("alpha must be a finite number within +-{:e}, got {alpha}", MAX_ALPHA);
    }
    Ok(())
}

/// Checks steering layers against the model depth with one clear message.
pub fn check_layers(layers: &[usize], num_layers: usize) -> Result<()> {
    if let Some(&bad) = layers.iter().find(|&&l| l >= num_layers) {
        bail!(
            "layer {bad} is out of range: the model has {num_layers} layers (0-{})",
            num_layers - 1
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::{LayerReading, VectorMetadata};

    /// Where project mode puts a projection `p` for `alpha`, between class means 1 and 3.
    fn moved(alpha: f64, p: f64) -> f64 {
        p + ProjectionShift::new(alpha, 1.0, 3.0).displacement(p)
    }

    #[test]
    fn project_mode_units_are_the_class_means() {
        for p in [0.0, 1.0, 2.0, 3.0] {
            assert_eq!(moved(0.0, p), p, "alpha 0 leaves the state");
            assert!((moved(1.0, p) - 3.0).abs() < 1e-12, "alpha 1: the correct-class mean");
            assert!(
                (moved(2.0, p) - 5.0).abs() < 1e-12,
                "each unit beyond 1 is one class gap"
            );
            assert!((moved(0.5, p) - (p + 3.0) / 2.0).abs() < 1e-12, "halfway");
        }
        for p in [1.0, 2.0, 3.0, 7.5] {
            assert!((moved(-1.0, p) - 1.0).abs() < 1e-12, "alpha -1: the copy-class mean");
            assert!((moved(-1.5, p) - 0.0).abs() < 1e-12);
        }
        assert_eq!(
            moved(-1.0, -4.0),
            -4.0,
            "a state past the copy mean is not pulled back toward correct"
        );
        assert_eq!(moved(1.0, 9.0), 9.0, "nor one past the correct mean toward copy");
        // Monotone in alpha for any starting point.
        let grid: Vec<f64> = (-30..=30).map(|k| k as f64 / 10.0).collect();
        for p in [-5.0, 2.0, 9.0] {
            assert!(grid.windows(2).all(|w| moved(w[0], p) <= moved(w[1], p) + 1e-12));
        }
    }

    fn project_steering(positions: SteerPositions) -> Steering {
        let reading = LayerReading {
            layer: 0,
            copy_mean: Some(1.0),
            correct_mean: Some(3.0),
            ..Default::default()
        };
        let meta = VectorMetadata {
            readings: vec![reading],
            ..Default::default()
        };
        let vectors = ControlVectors {
            vectors: BTreeMap::from([(0, vec![0.0, 2.0])]),
            metadata: Some(meta),
        };
        Steering::new(vectors, vec![0], Site::ResidPost, positions, SteerMode::Project).unwrap()
    }

    fn steered(hook: &mut SteeringHook, cached_len: usize, h: &[f32]) -> Vec<f32> {
        let t = Tensor::from_slice(h, (1, h.len() / 2, 2), &Device::Cpu).unwrap();
        hook.begin_forward(cached_len);
        let point = HookPoint::Block {
            layer: 0,
            site: Site::ResidPost,
        };
        if !hook.wants(point) {
            return h.to_vec();
        }
        hook.on(point, &t)
            .unwrap()
            .map_or(h.to_vec(), |o| o.flatten_all().unwrap().to_vec1().unwrap())
    }

    #[test]
    fn project_sets_the_projection_and_decision_steers_only_the_last_prompt_token() {
        let mut all = project_steering(SteerPositions::All).at(1.0, &Device::Cpu).unwrap();
        // The unit direction is (0, 1): the second coordinate goes to 3, the first stays.
        assert_eq!(steered(&mut all, 0, &[5.0, -2.0, 7.0, 0.5]), vec![5.0, 3.0, 7.0, 3.0]);
        let mut decision = project_steering(SteerPositions::Decision)
            .at(-1.0, &Device::Cpu)
            .unwrap();
        assert_eq!(
            steered(&mut decision, 0, &[5.0, -2.0, 7.0, 2.5]),
            vec![5.0, -2.0, 7.0, 1.0]
        );
        assert_eq!(
            steered(&mut decision, 2, &[7.0, 0.5]),
            vec![7.0, 0.5],
            "decoding steps are not steered"
        );
    }

    #[test]
    fn project_control_moves_as_far_along_a_random_unit_direction() {
        let real = project_steering(SteerPositions::All);
        let mut control = real.random_like(3).unwrap().at(1.0, &Device::Cpu).unwrap();
        let out = steered(&mut control, 0, &[5.0, -2.0]);
        let moved = ((out[0] - 5.0).powi(2) + (out[1] + 2.0).powi(2)).sqrt();
        assert!(
            (moved - 5.0).abs() < 1e-5,
            "the real push is 5 (from -2 to 3); the control moved {moved}"
        );
    }

    /// Row r of a per-row hook steers as `at(alphas[r])` does a batch of one, bit for bit.
    #[test]
    fn at_rows_steers_each_row_as_alone() {
        let alphas = [-1.5, 0.0, 0.25, 2.0];
        let h: Vec<f32> = (0..alphas.len() * 3 * 2)
            .map(|i| (i as f32 * 0.37).sin() * 4.0)
            .collect();
        let point = HookPoint::Block {
            layer: 0,
            site: Site::ResidPost,
        };
        let add = {
            let vectors = ControlVectors {
                vectors: BTreeMap::from([(0, vec![0.3, -1.7])]),
                metadata: None,
            };
            Steering::new(vectors, vec![0], Site::ResidPost, SteerPositions::All, SteerMode::Add).unwrap()
        };
        for steering in [
            add,
            project_steering(SteerPositions::All),
            project_steering(SteerPositions::Decision),
        ] {
            let batch = Tensor::from_slice(h.as_slice(), (alphas.len(), 3, 2), &Device::Cpu).unwrap();
            let mut rows = steering.at_rows(&alphas, &Device::Cpu).unwrap();
            rows.begin_forward(0);
            let together = if rows.wants(point) {
                rows.on(point, &batch).unwrap().unwrap()
            } else {
                batch.clone()
            };
            for (r, &alpha) in alphas.iter().enumerate() {
                let mut alone = steering.at(alpha, &Device::Cpu).unwrap();
                let row = &h[r * 6..(r + 1) * 6];
                let expected = steered(&mut alone, 0, row);
                let got: Vec<f32> = together.get(r).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(got, expected, "{:?} row {r} alpha {alpha}", steering.mode);
            }
            let wrong = Tensor::from_slice(&h[..6], (1, 3, 2), &Device::Cpu).unwrap();
            if rows.wants(point) {
                assert!(rows.on(point, &wrong).is_err(), "a batch of another size is refused");
            }
        }
    }

    #[test]
    fn project_needs_class_means() {
        let vectors = ControlVectors {
            vectors: BTreeMap::from([(0, vec![0.0, 2.0])]),
            metadata: None,
        };
        let err = Steering::new(
            vectors,
            vec![0],
            Site::ResidPost,
            SteerPositions::All,
            SteerMode::Project,
        )
        .unwrap_err();
        assert!(err.to_string().contains("class means"), "{err}");
    }
}
