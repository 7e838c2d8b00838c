//! What the timing examples share: a seeded uniform generator and Zipf-distributed level
//! codes (the power-law users and items of bench/scale.R's design).

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
