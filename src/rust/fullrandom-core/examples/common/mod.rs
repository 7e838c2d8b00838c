//! What the timing examples share: a seeded uniform generator, Zipf-distributed level
//! codes (the power-law users and items of bench/scale.R's design) and the crossed
//! Bernoulli data of the GLMM examples.

use fullrandom_core::glmm::GlmmChunk;
use fullrandom_core::{FactorCodes, FixedColumn, ModelData};

/// A xorshift generator of uniforms in [0, 1): fast, seeded, the same on every machine.
pub fn uniforms() -> impl FnMut() -> f64 {
    let mut state = 0x9e3779b97f4a7c15u64;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws `n` codes in `0..levels` with probability proportional to 1 / (code + 1).
pub fn zipf_codes(n: usize, levels: usize, next: &mut impl FnMut() -> f64) -> Vec<i32> {
    let mut cumulative = Vec::with_capacity(levels);
    let mut total = 0.0;
    for g in 0..levels {
        total += 1.0 / (g + 1) as f64;
        cumulative.push(total);
    }
    (0..n).map(|_| cumulative.partition_point(|&c| c < next() * total).min(levels - 1) as i32).collect()
}

/// The GLMM examples' crossed Bernoulli design: Zipf users and items (`n / 160` users,
/// `n / 380` items), logit P(y = 1) = -1 + 0.5 x + u + v, sd(u) = 1, sd(v) = 0.5.
#[allow(dead_code)] // not every example uses it
pub struct CrossedBernoulli {
    pub users: usize,
    pub items: usize,
    user: Vec<i32>,
    item: Vec<i32>,
    x: Vec<f64>,
    y: Vec<f64>,
}

#[allow(dead_code)]
impl CrossedBernoulli {
    pub fn new(n: usize) -> Self {
        let (users, items) = ((n / 160).max(2), (n / 380).max(2));
        let mut next = uniforms();
        let normal = |next: &mut dyn FnMut() -> f64| {
            let (a, b) = (next().max(1e-300), next());
            (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
        };
        let user = zipf_codes(n, users, &mut next);
        let item = zipf_codes(n, items, &mut next);
        let x: Vec<f64> = (0..n).map(|_| normal(&mut next)).collect();
        let a: Vec<f64> = (0..users).map(|_| normal(&mut next)).collect();
        let b: Vec<f64> = (0..items).map(|_| 0.5 * normal(&mut next)).collect();
        let y: Vec<f64> = (0..n)
            .map(|i| {
                let eta = -1.0 + 0.5 * x[i] + a[user[i] as usize] + b[item[i] as usize];
                f64::from(next() < 1.0 / (1.0 + (-eta).exp()))
            })
            .collect();
        CrossedBernoulli { users, items, user, item, x, y }
    }

    /// The rows as one chunk, `y ~ x + (1 | user) + (1 | item)`.
    pub fn chunk(&self) -> GlmmChunk<'_> {
        GlmmChunk {
            data: ModelData {
                y: &self.y,
                x: vec![FixedColumn::Ones, FixedColumn::Values(&self.x)],
                x_names: vec!["(Intercept)".into(), "x".into()],
                intercept: Some(0),
                factors: vec![
                    FactorCodes { name: "user".into(), codes: &self.user, offset: 0, n_levels: self.users },
                    FactorCodes { name: "item".into(), codes: &self.item, offset: 0, n_levels: self.items },
                ],
            },
            trials: None,
            offset: None,
        }
    }
}
