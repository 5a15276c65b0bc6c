//! Interoperability: a checkpoint written by fixpoint loads with the Python
//! `safetensors` and `numpy` packages from PyPI, with the same names, shapes, dtypes
//! and values (bit for bit) and the documented metadata (`tests/interop/
//! check_safetensors.py`). Without python3 or the packages the test prints why and
//! passes, unless `FIXPOINT_REQUIRE_PY=1` (set by CI), where it fails.

use fixpoint::Tensor;
use fixpoint::nn::{Activation, Mlp, Module};
use fixpoint::optim::{AdamW, AdamWConfig, Optimizer};
use fixpoint::rng::Rng;
use fixpoint::run::Checkpoint;
use serde_json::{Value, json};
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/check_safetensors.py");

/// Whether python3 with safetensors and numpy is here; otherwise why not.
fn python() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import safetensors, numpy"])
        .output()
        .map_err(|e| format!("python3 cannot be run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("python3 lacks safetensors or numpy: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn f32_spec(t: &Tensor) -> Value {
    json!({ "dtype": "float32", "shape": t.shape(), "bits": t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>() })
}

#[test]
fn python_safetensors_reads_a_fixpoint_checkpoint() {
    if let Err(why) = python() {
        if std::env::var("FIXPOINT_REQUIRE_PY").is_ok_and(|v| v == "1") {
            panic!("FIXPOINT_REQUIRE_PY=1 but {why} (pip install safetensors numpy)");
        }
        eprintln!("skipped: {why}");
        return;
    }
    // A trained model: parameters after one AdamW step, its moments, an RNG stream.
    let mut rng = Rng::new(3).stream("init");
    let mut model = Mlp::new(&[5, 7, 3], Activation::Relu, &mut rng).unwrap();
    let x = Tensor::from_vec((0..10).map(|i| i as f32 * 0.3 - 1.0).collect(), [2, 5]).unwrap();
    let loss = model.forward(&x).unwrap().square().mean_all().unwrap();
    loss.backward().unwrap();
    let mut opt = AdamW::new(AdamWConfig::default()).unwrap();
    opt.step(&mut model, 1e-2).unwrap();
    let data = Rng::new(9).stream("data");

    let mut ck = Checkpoint::new(42, json!({ "seed": 3 })).with_rng("data", &data).with_cursor(17);
    let mut want = serde_json::Map::new();
    for (n, p) in model.params() {
        want.insert(format!("param.{n}"), f32_spec(p));
        ck = ck.with_param(n, p);
    }
    for (n, t) in opt.state_tensors() {
        want.insert(format!("optim.{n}"), f32_spec(&t));
        ck = ck.with_optim(n, &t);
    }
    want.insert("rng.data".into(), json!({ "dtype": "uint64", "shape": [5], "bits": data.state() }));

    let dir = std::env::temp_dir().join(format!("fixpoint-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = ck.save_atomic(&dir, 0).unwrap();
    let expected = dir.join("expected.json");
    let meta = json!({ "format": "fixpoint-checkpoint/1", "step": "42", "cursor": "17", "rng": "[\"data\"]" });
    std::fs::write(&expected, json!({ "metadata": meta, "tensors": want }).to_string()).unwrap();

    let out = Command::new("python3").arg(SCRIPT).arg(&path).arg(&expected).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "python check failed:\n{text}");
    assert!(text.starts_with("ok:"), "{text}");

    // The check can fail: a changed value is reported.
    let mut wrong: Value = serde_json::from_slice(&std::fs::read(&expected).unwrap()).unwrap();
    wrong["tensors"]["param.layers.0.weight"]["bits"][0] = json!(0);
    std::fs::write(&expected, wrong.to_string()).unwrap();
    let out = Command::new("python3").arg(SCRIPT).arg(&path).arg(&expected).output().unwrap();
    assert!(!out.status.success(), "a wrong expectation must fail");
    assert!(String::from_utf8_lossy(&out.stdout).contains("values differ"));
    std::fs::remove_dir_all(dir).unwrap();
}
