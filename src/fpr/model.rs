//! The language-model backbone shared by every model kind (spec §4.1, mamba-ssm's
//! `MixerModel` without MLPs):
//!
//! ```text
//! h = E[tokens]                                  (E ~ N(0, 0.02²), vocabulary padded to a multiple of 8)
//! for each layer: r ← r + h (r ← h for the first);  h ← Mixer(RMSNorm(r))
//! logits = RMSNorm(r + h) · Eᵀ                   (tied; untied: a separate head)
//! ```
//!
//! Model kinds: `fp-rnn` (FP-RNN block, Householder mixer, parallel solver), `diagonal`
//! (the same block with `Q ≡ I`), `dense-seq` (the FP-RNN block with the fixed point found
//! token by token with explicit dense matrices), `lstm`, `fp-mamba` (the FP-Mamba block,
//! §4.3, damped solver) and `mamba` (its `Q ≡ I` baseline). Backward modes are per layer
//! ([`ModelConfig::layer_backward`]); [`ModelConfig::mixer`] picks the Kronecker or DPLR
//! mixer (DPLR only with `fp-mamba`).

use super::block::{BackwardMode, BlockConfig, FpRnnBlock, SolveMethod};
use super::implicit::AdjointStats;
use super::lstm::Lstm;
use super::mamba::{FpMambaBlock, MambaConfig};
use super::mixer::{MixerInput, MixerKind};
use super::solver::{SolveRun, SolveStats, SolverConfig};
use crate::error::{Error, Result};
use crate::init;
use crate::nn::{Linear, Module, RmsNorm, prefixed};
use crate::rng::Rng;
use crate::tensor::Tensor;
use std::sync::Mutex;

/// Which sequence mixer the layers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelKind {
    FpRnn,
    Diagonal,
    DenseSeq,
    Lstm,
    /// FP-Mamba (§4.3): the matrix-state block with a mixer, y-dependent B and C,
    /// LayerNorm per iteration, damped solver.
    FpMamba,
    /// Mamba-1: the FP-Mamba block with `Q ≡ I` and no output dependence.
    Mamba,
}

impl ModelKind {
    pub fn name(&self) -> &'static str {
        match self {
            ModelKind::FpRnn => "fp-rnn",
            ModelKind::Diagonal => "diagonal",
            ModelKind::DenseSeq => "dense-seq",
            ModelKind::Lstm => "lstm",
            ModelKind::FpMamba => "fp-mamba",
            ModelKind::Mamba => "mamba",
        }
    }
    /// Parse `fp-rnn`, `diagonal`, `dense-seq`, `lstm`, `fp-mamba`, `mamba`.
    pub fn parse(s: &str) -> Result<ModelKind> {
        Ok(match s {
            "fp-rnn" | "fprnn" => ModelKind::FpRnn,
            "diagonal" => ModelKind::Diagonal,
            "dense-seq" => ModelKind::DenseSeq,
            "lstm" => ModelKind::Lstm,
            "fp-mamba" | "fpmamba" => ModelKind::FpMamba,
            "mamba" => ModelKind::Mamba,
            _ => {
                return Err(Error::InvalidArgument {
                    op: "ModelKind::parse",
                    message: format!("unknown model kind {s:?} (fp-rnn, diagonal, dense-seq, lstm, fp-mamba, mamba)"),
                });
            }
        })
    }
}

/// Everything that determines a model (and, with the seeds, its initial parameters).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// Vocabulary size `V` (logits are `[B, T, V]`; the embedding has `V` rounded up to
    /// a multiple of 8 rows).
    pub vocab: usize,
    pub n_layers: usize,
    pub d_model: usize,
    /// `D` of the FP-RNN blocks (ignored by the LSTM, whose hidden size is `d_model`).
    pub d_inner: usize,
    /// Householder rank `r`.
    pub rank: usize,
    /// The mixer of `fp-rnn`/`dense-seq` layers; None: Householder with `rank` and
    /// `alpha_scale`.
    pub mixer: Option<MixerKind>,
    /// `N` of the FP-Mamba / Mamba blocks.
    pub d_state: usize,
    /// `hh_alpha_scale` (§8.1): 2 (reference code) or 1 (paper).
    pub alpha_scale: f32,
    pub mixer_input: MixerInput,
    pub mixer_eps: f32,
    pub short_conv: bool,
    /// FP-Mamba: `B` and `C` depend on the shifted output (`W_bc`; Table 1's ablation
    /// turns it off).
    pub bc_y_dependence: bool,
    /// FP-Mamba / Mamba: the SiLU(z) gate inside every iteration (`glu_in_loop`).
    pub glu_in_loop: bool,
    /// eps of the blocks' output RMSNorm.
    pub norm_eps: f32,
    /// eps of the backbone's RMSNorms.
    pub backbone_eps: f32,
    pub tie_embeddings: bool,
    pub solver: SolverConfig,
    pub backward: BackwardMode,
    /// Per-layer backward modes (overrides `backward`; empty: `backward` everywhere).
    pub layer_backward: Vec<BackwardMode>,
    /// Seeds the initial parameters.
    pub seed: u64,
    /// Seeds the random `ℓ_max` draws.
    pub solver_seed: u64,
}

impl ModelConfig {
    /// Defaults of the reference FP-RNN: `D = 2d`, rank 1, alpha scale 2, `p = [x; shift(h)]`,
    /// no short conv, tied embeddings, the FP-RNN solver settings.
    pub fn new(kind: ModelKind, vocab: usize, n_layers: usize, d_model: usize) -> ModelConfig {
        ModelConfig {
            kind,
            vocab,
            n_layers,
            d_model,
            d_inner: 2 * d_model,
            rank: 1,
            mixer: None,
            d_state: 16,
            alpha_scale: 2.0,
            mixer_input: MixerInput::Concat,
            mixer_eps: 1e-6,
            short_conv: false,
            bc_y_dependence: true,
            glu_in_loop: false,
            norm_eps: 1e-5,
            backbone_eps: 1e-5,
            tie_embeddings: true,
            solver: if matches!(kind, ModelKind::FpMamba | ModelKind::Mamba) {
                SolverConfig::fp_mamba()
            } else {
                SolverConfig::default()
            },
            backward: BackwardMode::OneStep,
            layer_backward: Vec::new(),
            seed: 0,
            solver_seed: 0,
        }
    }

    /// The configuration of each FP-RNN block (None for the LSTM).
    pub fn block_config(&self) -> Option<BlockConfig> {
        let mixer = match self.kind {
            ModelKind::Lstm | ModelKind::FpMamba | ModelKind::Mamba => return None,
            ModelKind::Diagonal => MixerKind::Identity,
            ModelKind::FpRnn | ModelKind::DenseSeq => {
                self.mixer.unwrap_or(MixerKind::Householder { rank: self.rank, alpha_scale: self.alpha_scale })
            }
        };
        Some(BlockConfig {
            d_model: self.d_model,
            d_inner: self.d_inner,
            mixer,
            mixer_input: self.mixer_input,
            mixer_eps: self.mixer_eps,
            short_conv: self.short_conv,
            conv_kernel: 4,
            norm_eps: self.norm_eps,
            solve: if self.kind == ModelKind::DenseSeq { SolveMethod::Sequential } else { SolveMethod::Parallel },
            backward: self.backward,
        })
    }

    /// The configuration of block `layer` (its own backward mode when
    /// [`ModelConfig::layer_backward`] names one).
    pub fn block_config_for(&self, layer: usize) -> Option<BlockConfig> {
        let mut bc = self.block_config()?;
        if let Some(&m) = self.layer_backward.get(layer) {
            bc.backward = m;
        }
        Some(bc)
    }

    /// The configuration of FP-Mamba / Mamba block `layer` (None for other kinds).
    pub fn mamba_config_for(&self, layer: usize) -> Option<MambaConfig> {
        let base = match self.kind {
            ModelKind::FpMamba => MambaConfig {
                mixer: self.mixer.unwrap_or(MixerKind::Householder { rank: self.rank, alpha_scale: self.alpha_scale }),
                y_dependence: self.bc_y_dependence,
                ..MambaConfig::fp_mamba(self.d_model)
            },
            ModelKind::Mamba => MambaConfig::mamba(self.d_model),
            _ => return None,
        };
        Some(MambaConfig {
            d_inner: self.d_inner,
            d_state: self.d_state,
            mixer_input: self.mixer_input,
            mixer_eps: self.mixer_eps,
            norm_eps: self.norm_eps,
            short_conv: self.short_conv,
            glu_in_loop: self.glu_in_loop,
            backward: self.layer_backward.get(layer).copied().unwrap_or(self.backward),
            out_scale: 1.0 / (self.n_layers.max(1) as f32).sqrt(),
            ..base
        })
    }

    /// The embedding's row count: `vocab` rounded up to a multiple of 8.
    pub fn padded_vocab(&self) -> usize {
        self.vocab.div_ceil(8) * 8
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::InvalidArgument { op: "ModelConfig", message });
        if self.vocab == 0 || self.n_layers == 0 || self.d_model == 0 {
            return bad(format!(
                "vocab {}, n_layers {} and d_model {} must be positive",
                self.vocab, self.n_layers, self.d_model
            ));
        }
        if matches!(self.kind, ModelKind::FpMamba | ModelKind::Mamba) && self.d_state == 0 {
            return bad("d_state must be positive".to_string());
        }
        if self.kind != ModelKind::Lstm && self.d_inner == 0 {
            return bad("d_inner must be positive".to_string());
        }
        if matches!(self.kind, ModelKind::FpRnn | ModelKind::DenseSeq | ModelKind::FpMamba)
            && self.mixer.is_none()
            && self.rank == 0
        {
            return bad("the Householder rank must be at least 1".to_string());
        }
        if !self.layer_backward.is_empty() && self.layer_backward.len() != self.n_layers {
            return bad(format!(
                "layer_backward names {} modes for {} layers",
                self.layer_backward.len(),
                self.n_layers
            ));
        }
        self.backward.validate()?;
        for m in &self.layer_backward {
            m.validate()?;
        }
        self.solver.validate()
    }
}

/// One residual layer's sequence mixer.
#[derive(Clone, Debug)]
pub enum Layer {
    Fp(Box<FpRnnBlock>),
    Lstm(Box<Lstm>),
    /// FP-Mamba or Mamba.
    Mamba(Box<FpMambaBlock>),
}

impl Module for Layer {
    fn params(&self) -> Vec<(String, &Tensor)> {
        match self {
            Layer::Fp(b) => b.params(),
            Layer::Lstm(l) => l.params(),
            Layer::Mamba(b) => b.params(),
        }
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        match self {
            Layer::Fp(b) => b.params_mut(),
            Layer::Lstm(l) => l.params_mut(),
            Layer::Mamba(b) => b.params_mut(),
        }
    }
}

/// Everything [`FpModel::forward_detailed`] returns.
#[derive(Clone, Debug)]
pub struct ModelOutput {
    /// `[B, T, V]`.
    pub logits: Tensor,
    /// Per FP layer: the state its recorded step started from (`h*`, detached); empty
    /// for the LSTM.
    pub states: Vec<Tensor>,
    /// Per FP layer: the solver statistics.
    pub stats: Vec<SolveStats>,
}

#[derive(Debug)]
struct Runtime {
    rng: Rng,
    last_stats: Vec<SolveStats>,
}

/// A sequence model: embedding, `n_layers` pre-norm residual layers, final norm, head.
#[derive(Debug)]
pub struct FpModel {
    cfg: ModelConfig,
    embedding: Tensor,
    norms: Vec<RmsNorm>,
    layers: Vec<Layer>,
    norm_f: RmsNorm,
    head: Option<Linear>,
    training: bool,
    runtime: Mutex<Runtime>,
}

impl FpModel {
    /// Build and initialise a model (the backbone's init, §4.1). Starts in training mode.
    pub fn new(cfg: ModelConfig) -> Result<FpModel> {
        cfg.validate()?;
        let root = Rng::new(cfg.seed);
        let mut rng = root.stream("init");
        let embedding = init::normal([cfg.padded_vocab(), cfg.d_model], 0.0, 0.02, &mut rng).requires_grad_();
        let mut norms = Vec::with_capacity(cfg.n_layers);
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            norms.push(RmsNorm::new(cfg.d_model, cfg.backbone_eps, true));
            layers.push(match (cfg.block_config_for(i), cfg.mamba_config_for(i)) {
                (Some(bc), _) => Layer::Fp(Box::new(FpRnnBlock::new(&bc, &mut rng)?)),
                (None, Some(mc)) => Layer::Mamba(Box::new(FpMambaBlock::new(&mc, &mut rng)?)),
                (None, None) => Layer::Lstm(Box::new(Lstm::new(cfg.d_model, cfg.d_model, &mut rng)?)),
            });
        }
        let norm_f = RmsNorm::new(cfg.d_model, cfg.backbone_eps, true);
        let head = (!cfg.tie_embeddings).then(|| Linear::new(cfg.d_model, cfg.vocab, false, &mut rng));
        let runtime = Mutex::new(Runtime { rng: Rng::new(cfg.solver_seed).stream("lmax"), last_stats: Vec::new() });
        Ok(FpModel { cfg, embedding, norms, layers, norm_f, head, training: true, runtime })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// The state of the stream that draws a random training `ℓ_max` (for checkpoints).
    pub fn solver_rng(&self) -> Rng {
        self.runtime.lock().unwrap_or_else(|e| e.into_inner()).rng.clone()
    }
    /// Continue the random-`ℓ_max` stream from a saved state.
    pub fn set_solver_rng(&self, rng: Rng) {
        self.runtime.lock().unwrap_or_else(|e| e.into_inner()).rng = rng;
    }

    /// The solver statistics of the last forward pass, one entry per FP layer.
    pub fn last_stats(&self) -> Vec<SolveStats> {
        self.runtime.lock().unwrap_or_else(|e| e.into_inner()).last_stats.clone()
    }

    /// Per FP layer, the statistics of its latest implicit adjoint solve (None for layers
    /// with another backward mode or before the first backward).
    pub fn last_adjoint_stats(&self) -> Vec<Option<AdjointStats>> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                Layer::Fp(b) => Some(b.last_adjoint_stats()),
                Layer::Mamba(b) => Some(b.last_adjoint_stats()),
                Layer::Lstm(_) => None,
            })
            .collect()
    }

    /// The quantile and `ℓ_max` the next forward pass would use (draws `ℓ_max` when it
    /// is random and the model is training).
    fn next_run(&self) -> SolveRun {
        let mut rt = self.runtime.lock().unwrap_or_else(|e| e.into_inner());
        SolveRun::new(&self.cfg.solver, self.training, &mut rt.rng)
    }

    /// Logits `[B, T, V]` for `tokens` (row-major, `shape = [B, T]`).
    pub fn forward(&self, tokens: &[usize], shape: [usize; 2]) -> Result<Tensor> {
        Ok(self.forward_detailed(tokens, shape, None)?.logits)
    }

    /// The forward pass with its per-layer states and statistics. With `states` (one
    /// `[B, T, D]` tensor per FP layer), the solvers are skipped and each recorded step
    /// starts from the given state: this evaluates the one-step objective at a fixed
    /// `h*` (e.g. for finite differences of `F(x, stopgrad(h*))`).
    pub fn forward_detailed(
        &self,
        tokens: &[usize],
        shape: [usize; 2],
        states: Option<&[Tensor]>,
    ) -> Result<ModelOutput> {
        let [b, t] = shape;
        if tokens.len() != b * t {
            return Err(Error::InvalidArgument {
                op: "FpModel::forward",
                message: format!("{} tokens cannot fill shape [{b}, {t}]", tokens.len()),
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&id| id >= self.cfg.vocab) {
            return Err(Error::Index {
                op: "FpModel::forward",
                axis: 0,
                index: bad,
                size: self.cfg.vocab,
                shape: [b, t].into(),
            });
        }
        let n_fp = self.layers.iter().filter(|l| !matches!(l, Layer::Lstm(_))).count();
        if let Some(s) = states
            && s.len() != n_fp
        {
            return Err(Error::InvalidArgument {
                op: "FpModel::forward",
                message: format!("{} states given for {n_fp} FP layers", s.len()),
            });
        }
        let run = self.next_run();
        let mut h = self.embedding.embedding(tokens, &[b, t])?;
        let mut resid: Option<Tensor> = None;
        let mut out_states = Vec::new();
        let mut out_stats = Vec::new();
        for (norm, layer) in self.norms.iter().zip(&self.layers) {
            let r = match &resid {
                Some(r) => r.add(&h)?,
                None => h,
            };
            let x = norm.forward(&r)?;
            h = match layer {
                Layer::Fp(block) => {
                    let given = states.map(|s| &s[out_states.len()]);
                    let o = block.forward(&x, &self.cfg.solver, &run, given)?;
                    out_states.push(o.state);
                    out_stats.push(o.stats);
                    o.out
                }
                Layer::Mamba(block) => {
                    let given = states.map(|s| &s[out_states.len()]);
                    let o = block.forward(&x, &self.cfg.solver, &run, given)?;
                    out_states.push(o.state);
                    out_stats.push(o.stats);
                    o.out
                }
                Layer::Lstm(l) => l.forward(&x)?,
            };
            resid = Some(r);
        }
        let last = match &resid {
            Some(r) => r.add(&h)?,
            None => h,
        };
        let y = self.norm_f.forward(&last)?;
        let logits = match &self.head {
            Some(head) => head.forward(&y)?,
            None => y.matmul(&self.embedding.narrow(0, 0, self.cfg.vocab)?.t()?)?,
        };
        if states.is_none() {
            self.runtime.lock().unwrap_or_else(|e| e.into_inner()).last_stats = out_stats.clone();
        }
        Ok(ModelOutput { logits, states: out_states, stats: out_stats })
    }
}

impl Module for FpModel {
    fn params(&self) -> Vec<(String, &Tensor)> {
        let mut v = vec![("embedding.weight".to_string(), &self.embedding)];
        for (i, (norm, layer)) in self.norms.iter().zip(&self.layers).enumerate() {
            v.extend(prefixed(format!("layers.{i}.norm"), norm.params()));
            v.extend(prefixed(format!("layers.{i}.mixer"), layer.params()));
        }
        v.extend(prefixed("norm_f", self.norm_f.params()));
        if let Some(h) = &self.head {
            v.extend(prefixed("head", h.params()));
        }
        v
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut v = vec![("embedding.weight".to_string(), &mut self.embedding)];
        for (i, (norm, layer)) in self.norms.iter_mut().zip(&mut self.layers).enumerate() {
            v.extend(prefixed(format!("layers.{i}.norm"), norm.params_mut()));
            v.extend(prefixed(format!("layers.{i}.mixer"), layer.params_mut()));
        }
        v.extend(prefixed("norm_f", self.norm_f.params_mut()));
        if let Some(h) = &mut self.head {
            v.extend(prefixed("head", h.params_mut()));
        }
        v
    }
    fn train(&mut self, training: bool) {
        self.training = training;
    }
}
