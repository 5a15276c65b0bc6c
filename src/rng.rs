//! An own seeded PRNG (xoshiro256**, seeded through SplitMix64) so that runs are
//! reproducible on every machine, with independent named streams: `Rng::new(seed)
//! .stream("init")` and `.stream("data")` never share a sequence, and adding a stream
//! does not shift another's numbers.

/// xoshiro256** state. `Clone` gives an identical, independent copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
    /// A cached second normal from Box–Muller.
    spare: Option<u64>,
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let s = [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x)];
        Rng { s, spare: None }
    }
    /// An independent generator derived from this one's seed state and `name`.
    /// Does not advance `self`.
    pub fn stream(&self, name: &str) -> Rng {
        let mut x =
            self.s[0] ^ self.s[1].rotate_left(17) ^ self.s[2].rotate_left(31) ^ self.s[3].rotate_left(47) ^ fnv1a(name);
        let mut r = Rng { s: [0; 4], spare: None };
        for v in r.s.iter_mut() {
            *v = splitmix64(&mut x);
        }
        r
    }
    /// The full state (for checkpoints).
    pub fn state(&self) -> [u64; 5] {
        [self.s[0], self.s[1], self.s[2], self.s[3], self.spare.map_or(u64::MAX, |v| v & 0xFFFF_FFFF)]
    }
    pub fn from_state(st: [u64; 5]) -> Rng {
        Rng { s: [st[0], st[1], st[2], st[3]], spare: (st[4] != u64::MAX).then_some(st[4]) }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }
    /// Uniform in [0, 1) with 24 random bits.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }
    /// Uniform integer in [0, n) without modulo bias (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }
    /// Standard normal (Box–Muller, computed in f64).
    pub fn normal(&mut self) -> f32 {
        if let Some(bits) = self.spare.take() {
            return f32::from_bits(bits as u32);
        }
        let u1 = 1.0 - self.uniform_f64(); // (0, 1]
        let u2 = self.uniform_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (2.0 * std::f64::consts::PI * u2).sin_cos();
        self.spare = Some(((r * s) as f32).to_bits() as u64);
        (r * c) as f32
    }
    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
    /// A random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
    /// Bernoulli(p).
    pub fn bernoulli(&mut self, p: f32) -> bool {
        self.uniform() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_streams_differ() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xa: Vec<u64> = (0..10).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..10).map(|_| b.next_u64()).collect();
        assert_eq!(xa, xb);
        let root = Rng::new(7);
        let (mut s1, mut s2) = (root.stream("init"), root.stream("data"));
        assert_ne!(s1.next_u64(), s2.next_u64());
        assert_eq!(root.stream("init"), root.stream("init"));
    }

    #[test]
    fn normal_moments_and_state_roundtrip() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal() as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        let _ = r.normal();
        let st = r.state();
        let mut r2 = Rng::from_state(st);
        assert_eq!(r.normal(), r2.normal());
        assert_eq!(r.next_u64(), r2.next_u64());
    }

    #[test]
    fn below_is_in_range_and_covers() {
        let mut r = Rng::new(3);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[r.below(7)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800 && c < 1200), "{seen:?}");
    }
}
