//! Temporary driver until `fixpoint bench core` is wired: prints the JSON line.
fn main() {
    let threads: Option<usize> = std::env::args().nth(1).and_then(|s| s.parse().ok());
    let r = fixpoint::cpu::par::with_threads(threads, || fixpoint::bench::core::run(7)).unwrap().unwrap();
    println!("{}", r.to_json());
}
