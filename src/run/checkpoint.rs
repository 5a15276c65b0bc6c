//! Checkpoints: everything needed to continue a run exactly, in one safetensors file.
//!
//! File `ckpt-<step>.safetensors` (the `safetensors` crate's format, readable by any
//! safetensors reader):
//!
//! | tensor name        | dtype | shape          | content                                   |
//! |--------------------|-------|----------------|-------------------------------------------|
//! | `param.<name>`     | F32   | the parameter's| a model parameter                         |
//! | `optim.<name>`     | F32   | any            | an optimiser state buffer (moments, ...)  |
//! | `rng.<name>`       | U64   | `[5]`          | an RNG stream's [`Rng::state`]            |
//! | `extra.<name>`     | F32   | any            | other training state (e.g. a DINO center) |
//!
//! Metadata (string to string): `format` = [`FORMAT`], `crate_version`, `step` and `cursor`
//! (decimal), `config` (the run's configuration as compact JSON), `params`, `optim`,
//! `rng` and `extra` (JSON arrays of names; `extra` may be absent, which keep the order the caller gave), and `meta.<key>`
//! for the caller's own strings (e.g. an optimiser's step count), and `checksum`: a
//! 64-bit hash of every tensor's name and bytes (see [`checksum`]), so that a flipped
//! byte in the data, which the safetensors format itself cannot notice, is refused.
//!
//! RNG states are U64 tensors rather than metadata so that they round-trip bit for bit
//! and stay visible to generic safetensors tools.

use crate::error::{Error, Result};
use crate::nn::Module;
use crate::rng::Rng;
use crate::run::dir::{io_error, write_atomic_with};
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The value of the `format` metadata key.
pub const FORMAT: &str = "fixpoint-checkpoint/1";

/// A training state at the end of step `step` (that many optimiser steps done).
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub step: u64,
    /// Model parameters by name, in the caller's order.
    pub params: Vec<(String, Tensor)>,
    /// Optimiser state buffers by name.
    pub optim: Vec<(String, Tensor)>,
    /// Other training state by name (neither a parameter nor an optimiser buffer).
    pub extra: Vec<(String, Tensor)>,
    /// The state of every RNG stream, by stream name.
    pub rng: Vec<(String, [u64; 5])>,
    /// Where the data pipeline is (e.g. examples consumed in the current epoch).
    pub cursor: u64,
    /// The run's configuration.
    pub config: Value,
    /// Free-form strings of the caller (stored as `meta.<key>`).
    pub meta: BTreeMap<String, String>,
    /// Where it was read from (the file name; empty for a checkpoint built in memory).
    pub source: String,
}

/// `ckpt-<step>.safetensors`
pub fn file_name(step: u64) -> String {
    format!("ckpt-{step}.safetensors")
}

/// The step of a checkpoint file name, `None` for any other name.
pub fn step_of_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("ckpt-")?.strip_suffix(".safetensors")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn bad(origin: &str, message: impl Into<String>) -> Error {
    Error::Io { path: origin.to_string(), message: format!("not a valid checkpoint: {}", message.into()) }
}

fn missing(what: &str, name: &str, have: &[String]) -> Error {
    Error::InvalidArgument {
        op: "checkpoint",
        message: format!(
            "no {what} named {name:?} (it has: {})",
            if have.is_empty() { "none".into() } else { have.join(", ") }
        ),
    }
}

impl Checkpoint {
    /// An empty checkpoint for `step`; add state with the `with_*` methods.
    pub fn new(step: u64, config: Value) -> Checkpoint {
        Checkpoint {
            step,
            params: Vec::new(),
            optim: Vec::new(),
            extra: Vec::new(),
            rng: Vec::new(),
            cursor: 0,
            config,
            meta: BTreeMap::new(),
            source: String::new(),
        }
    }
    /// Add a parameter (its current values; the graph is not stored).
    pub fn with_param(mut self, name: impl Into<String>, t: &Tensor) -> Self {
        self.params.push((name.into(), t.detach()));
        self
    }
    /// Add an optimiser buffer.
    pub fn with_optim(mut self, name: impl Into<String>, t: &Tensor) -> Self {
        self.optim.push((name.into(), t.detach()));
        self
    }
    /// Add other training state.
    pub fn with_extra(mut self, name: impl Into<String>, t: &Tensor) -> Self {
        self.extra.push((name.into(), t.detach()));
        self
    }
    /// Add an RNG stream's state.
    pub fn with_rng(mut self, name: impl Into<String>, rng: &Rng) -> Self {
        self.rng.push((name.into(), rng.state()));
        self
    }
    pub fn with_cursor(mut self, cursor: u64) -> Self {
        self.cursor = cursor;
        self
    }
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    /// The parameter `name`, or an error listing the names there are.
    pub fn param(&self, name: &str) -> Result<&Tensor> {
        find(&self.params, name).ok_or_else(|| missing("parameter", name, &names(&self.params)))
    }
    /// The optimiser buffer `name`.
    pub fn optim_state(&self, name: &str) -> Result<&Tensor> {
        find(&self.optim, name).ok_or_else(|| missing("optimiser state", name, &names(&self.optim)))
    }
    /// The extra state `name`.
    pub fn extra_state(&self, name: &str) -> Result<&Tensor> {
        find(&self.extra, name).ok_or_else(|| missing("extra state", name, &names(&self.extra)))
    }
    /// The RNG stream `name`, restored to where it was.
    pub fn rng(&self, name: &str) -> Result<Rng> {
        find(&self.rng, name).map(|s| Rng::from_state(*s)).ok_or_else(|| missing("RNG stream", name, &names(&self.rng)))
    }
    /// The caller's metadata string `key`.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| missing("metadata entry", key, &self.meta.keys().cloned().collect::<Vec<_>>()))
    }

    /// The checkpoint as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        check_unique("parameter", &self.params)?;
        check_unique("optimiser state", &self.optim)?;
        check_unique("extra state", &self.extra)?;
        check_unique("RNG stream", &self.rng)?;
        let mut data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (prefix, list) in [("param.", &self.params), ("optim.", &self.optim), ("extra.", &self.extra)] {
            for (name, t) in list {
                let bytes: Vec<u8> = t.contiguous_data().iter().flat_map(|v| v.to_le_bytes()).collect();
                data.push((format!("{prefix}{name}"), Dtype::F32, t.shape().to_vec(), bytes));
            }
        }
        for (name, st) in &self.rng {
            let bytes: Vec<u8> = st.iter().flat_map(|v| v.to_le_bytes()).collect();
            data.push((format!("rng.{name}"), Dtype::U64, vec![5], bytes));
        }
        let sum = checksum(data.iter().map(|(n, _, _, b)| (n.as_str(), b.as_slice())));
        let mut views = Vec::with_capacity(data.len());
        for (name, dtype, shape, bytes) in &data {
            let view = TensorView::new(*dtype, shape.clone(), bytes)
                .map_err(|e| Error::InvalidArgument { op: "checkpoint", message: format!("{name}: {e}") })?;
            views.push((name.clone(), view));
        }
        let list = |v: Vec<String>| serde_json::to_string(&v).expect("strings serialise");
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("crate_version".to_string(), env!("CARGO_PKG_VERSION").to_string());
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert("cursor".to_string(), self.cursor.to_string());
        meta.insert("config".to_string(), self.config.to_string());
        meta.insert("params".to_string(), list(names(&self.params)));
        meta.insert("optim".to_string(), list(names(&self.optim)));
        meta.insert("rng".to_string(), list(names(&self.rng)));
        if !self.extra.is_empty() {
            meta.insert("extra".to_string(), list(names(&self.extra)));
        }
        meta.insert("checksum".to_string(), format!("{sum:016x}"));
        for (k, v) in &self.meta {
            meta.insert(format!("meta.{k}"), v.clone());
        }
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::InvalidArgument { op: "checkpoint", message: format!("cannot serialise: {e}") })
    }

    /// Parse safetensors bytes written by [`Checkpoint::to_bytes`]; `origin` names the
    /// source in errors. Anything malformed is an error, never a panic.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Checkpoint> {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(origin, e.to_string()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(origin, e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).ok_or_else(|| bad(origin, format!("metadata has no {k:?}")));
        let format = get("format")?;
        if format != FORMAT {
            return Err(bad(origin, format!("format {format:?}, expected {FORMAT:?}")));
        }
        let num = |k: &str| -> Result<u64> {
            get(k)?.parse().map_err(|_| bad(origin, format!("metadata {k:?} is not a whole number")))
        };
        let step = num("step")?;
        let cursor = num("cursor")?;
        let config: Value =
            serde_json::from_str(get("config")?).map_err(|e| bad(origin, format!("metadata \"config\": {e}")))?;
        let order = |k: &str| -> Result<Vec<String>> {
            serde_json::from_str(get(k)?).map_err(|e| bad(origin, format!("metadata {k:?}: {e}")))
        };
        let (param_names, optim_names, rng_names) = (order("params")?, order("optim")?, order("rng")?);
        let extra_names = if meta.contains_key("extra") { order("extra")? } else { Vec::new() };

        let expected = param_names.len() + optim_names.len() + extra_names.len() + rng_names.len();
        if st.len() != expected {
            return Err(bad(origin, format!("{} tensors, but the metadata lists {expected}", st.len())));
        }
        if let Some(want) = meta.get("checksum") {
            let full: Vec<String> = (param_names.iter().map(|n| format!("param.{n}")))
                .chain(optim_names.iter().map(|n| format!("optim.{n}")))
                .chain(extra_names.iter().map(|n| format!("extra.{n}")))
                .chain(rng_names.iter().map(|n| format!("rng.{n}")))
                .collect();
            let mut parts = Vec::with_capacity(full.len());
            for n in &full {
                parts.push((n.as_str(), st.tensor(n).map_err(|e| bad(origin, format!("{n}: {e}")))?.data()));
            }
            let got = format!("{:016x}", checksum(parts.into_iter()));
            if &got != want {
                return Err(bad(
                    origin,
                    format!("checksum {got} differs from the stored {want} (the file is corrupt)"),
                ));
            }
        }
        let f32_tensor = |full: String| -> Result<Tensor> {
            let v = st.tensor(&full).map_err(|e| bad(origin, format!("{full}: {e}")))?;
            if v.dtype() != Dtype::F32 {
                return Err(bad(origin, format!("{full} has dtype {:?}, expected F32", v.dtype())));
            }
            let data: Vec<f32> =
                v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Tensor::from_vec(data, v.shape().to_vec()).map_err(|e| bad(origin, format!("{full}: {e}")))
        };
        let mut params = Vec::with_capacity(param_names.len());
        for n in param_names {
            params.push((n.clone(), f32_tensor(format!("param.{n}"))?));
        }
        let mut optim = Vec::with_capacity(optim_names.len());
        for n in optim_names {
            optim.push((n.clone(), f32_tensor(format!("optim.{n}"))?));
        }
        let mut extra = Vec::with_capacity(extra_names.len());
        for n in extra_names {
            extra.push((n.clone(), f32_tensor(format!("extra.{n}"))?));
        }
        let mut rng = Vec::with_capacity(rng_names.len());
        for n in rng_names {
            let full = format!("rng.{n}");
            let v = st.tensor(&full).map_err(|e| bad(origin, format!("{full}: {e}")))?;
            if v.dtype() != Dtype::U64 || v.shape() != [5] {
                return Err(bad(origin, format!("{full} is {:?} {:?}, expected U64 [5]", v.dtype(), v.shape())));
            }
            let mut s = [0u64; 5];
            for (dst, c) in s.iter_mut().zip(v.data().chunks_exact(8)) {
                *dst = u64::from_le_bytes(c.try_into().expect("chunks of 8"));
            }
            rng.push((n, s));
        }
        let user =
            meta.iter().filter_map(|(k, v)| k.strip_prefix("meta.").map(|k| (k.to_string(), v.clone()))).collect();
        let ck = Checkpoint { step, params, optim, extra, rng, cursor, config, meta: user, source: origin.to_string() };
        check_unique("parameter", &ck.params).map_err(|e| bad(origin, e.to_string()))?;
        check_unique("optimiser state", &ck.optim).map_err(|e| bad(origin, e.to_string()))?;
        check_unique("extra state", &ck.extra).map_err(|e| bad(origin, e.to_string()))?;
        check_unique("RNG stream", &ck.rng).map_err(|e| bad(origin, e.to_string()))?;
        Ok(ck)
    }

    /// Check this checkpoint's parameters against `model` (every model parameter
    /// present with the same shape, no parameter the model lacks, optimiser buffers
    /// `<param>.<slot>` of the parameter's size or scalars), then copy them in. Every
    /// error names the tensor and the file; on error the model is untouched.
    pub fn restore_params(&self, model: &mut dyn Module) -> Result<()> {
        let from = if self.source.is_empty() { "checkpoint".to_string() } else { self.source.clone() };
        let mismatch =
            |message: String| Error::InvalidArgument { op: "checkpoint", message: format!("{from}: {message}") };
        let want: Vec<(String, Vec<usize>)> =
            model.params().into_iter().map(|(n, t)| (n, t.shape().to_vec())).collect();
        for (name, shape) in &want {
            let t = find(&self.params, name).ok_or_else(|| {
                mismatch(format!(
                    "the model's parameter {name:?} is missing (the checkpoint has {} parameters, the model {})",
                    self.params.len(),
                    want.len()
                ))
            })?;
            if t.shape() != shape.as_slice() {
                return Err(mismatch(format!(
                    "parameter {name:?} has shape {:?} in the checkpoint but {shape:?} in the model",
                    t.shape()
                )));
            }
        }
        if let Some((extra, _)) = self.params.iter().find(|(n, _)| !want.iter().any(|(w, _)| w == n)) {
            return Err(mismatch(format!("parameter {extra:?} is not in the model (a different model or config?)")));
        }
        for (name, t) in &self.optim {
            let owner = want.iter().find(|(w, _)| name.strip_prefix(w.as_str()).is_some_and(|r| r.starts_with('.')));
            if let Some((p, shape)) = owner {
                let n: usize = shape.iter().product();
                if t.numel() != n && t.numel() != 1 {
                    return Err(mismatch(format!(
                        "optimiser state {name:?} has {} values but parameter {p:?} has {n}",
                        t.numel()
                    )));
                }
            }
        }
        for (name, p) in model.params_mut() {
            p.assign(find(&self.params, &name).expect("checked above"))?;
        }
        Ok(())
    }

    /// Read a checkpoint file.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = fs::read(path).map_err(|e| io_error(path, "cannot read the checkpoint", e))?;
        Checkpoint::from_bytes(&bytes, &path.display().to_string())
    }

    /// Write `dir/ckpt-<step>.safetensors` atomically (temporary file, fsync, rename, fsync
    /// of the directory), then delete all but the newest `keep` checkpoints (`keep = 0`
    /// keeps all). Returns the file's path.
    pub fn save_atomic(&self, dir: &Path, keep: usize) -> Result<PathBuf> {
        self.save_atomic_with(dir, keep, |f, b| f.write_all(b))
    }

    /// [`Checkpoint::save_atomic`] with the byte-writing step supplied by the caller, so
    /// tests can make it fail part-way. A failed write leaves every existing file intact.
    pub fn save_atomic_with(
        &self,
        dir: &Path,
        keep: usize,
        write: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
    ) -> Result<PathBuf> {
        let bytes = self.to_bytes()?;
        let path = dir.join(file_name(self.step));
        write_atomic_with(&path, &bytes, write).map_err(|e| io_error(&path, "cannot write the checkpoint", e))?;
        if keep > 0 {
            let all = Checkpoint::list(dir)?;
            for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
                fs::remove_file(old).map_err(|e| io_error(old, "cannot remove an old checkpoint", e))?;
            }
        }
        Ok(path)
    }

    /// Every `ckpt-<step>.safetensors` in `dir`, oldest step first.
    pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
        let rd = fs::read_dir(dir).map_err(|e| io_error(dir, "cannot read the directory", e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| io_error(dir, "cannot read the directory", e))?;
            if let Some(step) = step_of_file_name(&entry.file_name().to_string_lossy()) {
                out.push((step, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The checkpoint with the highest step in `dir`, if any.
    pub fn latest(dir: &Path) -> Result<Option<PathBuf>> {
        Ok(Checkpoint::list(dir)?.pop().map(|(_, p)| p))
    }
}

/// The `checksum` metadata: a 64-bit FNV-1a-style hash over each tensor's name and
/// bytes, eight bytes at a time (not cryptographic: it catches corruption, not tampering).
pub fn checksum<'a>(parts: impl Iterator<Item = (&'a str, &'a [u8])>) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h = (h ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(PRIME);
        }
        for &b in words.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
        h = (h ^ bytes.len() as u64).wrapping_mul(PRIME);
    };
    for (name, bytes) in parts {
        eat(name.as_bytes());
        eat(bytes);
    }
    h
}

fn find<'a, T>(list: &'a [(String, T)], name: &str) -> Option<&'a T> {
    list.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn names<T>(list: &[(String, T)]) -> Vec<String> {
    list.iter().map(|(n, _)| n.clone()).collect()
}

fn check_unique<T>(what: &str, list: &[(String, T)]) -> Result<()> {
    let mut seen = HashSet::new();
    for (n, _) in list {
        if !seen.insert(n.as_str()) {
            return Err(Error::InvalidArgument { op: "checkpoint", message: format!("{what} {n:?} appears twice") });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_parse_back() {
        assert_eq!(step_of_file_name(&file_name(0)), Some(0));
        assert_eq!(step_of_file_name(&file_name(123_456)), Some(123_456));
        for bad in ["ckpt-.safetensors", "ckpt-1a.safetensors", "ckpt-1.safetensors.tmp", ".ckpt-1.tmp.safetensors"] {
            assert_eq!(step_of_file_name(bad), None, "{bad}");
        }
    }
}
