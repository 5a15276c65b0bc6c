//! The checkpoint loader on arbitrary bytes: an error or a checkpoint that writes back
//! and reads back to the same tensors; restoring it into a model either succeeds or
//! is an error. Never a panic.
#![no_main]

use fixpoint::nn::Linear;
use fixpoint::rng::Rng;
use fixpoint::run::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ck) = Checkpoint::from_bytes(data, "fuzz") else { return };
    let bytes = ck.to_bytes().expect("a loaded checkpoint serialises");
    let again = Checkpoint::from_bytes(&bytes, "again").expect("a written checkpoint loads");
    assert_eq!((again.step, again.cursor, again.rng.clone()), (ck.step, ck.cursor, ck.rng.clone()));
    for (a, b) in ck.params.iter().chain(&ck.optim).zip(again.params.iter().chain(&again.optim)) {
        assert_eq!(a.0, b.0);
        assert_eq!(a.1.shape(), b.1.shape());
        let bits = |t: &fixpoint::Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.1), bits(&b.1));
    }
    let mut model = Linear::new(3, 2, true, &mut Rng::new(0));
    let _ = ck.restore_params(&mut model);
});
