//! The family layer of generalized linear mixed models: a distribution of the response
//! given the linear predictor `eta`, and a link `g` with `E[y | eta] = n g^-1(eta)` (`n`
//! the trials of a binomial row, 1 otherwise).
//!
//! [`Family`] is what the GLMM code ([`crate::glmm`]) asks of a family: the inverse link,
//! `d mu / d eta`, the variance function, the log-likelihood of a row and its deviance
//! residual. Gaussian/identity is the trivial case (the linear model of [`crate::moments`]).
//! The codes of [`Distribution`] and [`Link`] are the ones the R package passes.

use crate::error::FitError;

/// The response distribution given the random effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Gaussian,
    /// `y` successes out of `n` trials.
    Binomial,
    /// `y` counts with mean `exp(eta)` (offsets enter `eta`).
    Poisson,
}

/// The link `eta = g(mu)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Identity,
    Logit,
    Probit,
    Log,
}

/// What the GLMM code needs of a family.
pub trait Family: Sync {
    /// `mu = g^-1(eta)`, the mean of one trial.
    fn linkinv(&self, eta: f64) -> f64;
    /// `d mu / d eta`.
    fn mu_eta(&self, eta: f64) -> f64;
    /// The variance function `V(mu)` of one trial.
    fn variance(&self, mu: f64) -> f64;
    /// Log-likelihood of `y` given `eta` and `n` trials, up to terms free of `eta`.
    fn loglik(&self, y: f64, n: f64, eta: f64) -> f64;
    /// The squared deviance residual of `y` with fitted mean `n mu` (glm's `dev.resids`).
    fn deviance(&self, y: f64, n: f64, mu: f64) -> f64;
    /// Whether the family has a free dispersion (a residual variance) of its own.
    fn has_dispersion(&self) -> bool;
}

/// A distribution with a link: the families of [`glm`](https://stat.ethz.ch/R-manual/R-devel/library/stats/html/family.html)
/// that the package fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlmFamily {
    pub distribution: Distribution,
    pub link: Link,
}

impl GlmFamily {
    /// The family from R's names (`family$family`, `family$link`); other combinations are
    /// an error naming what is supported.
    pub fn from_names(family: &str, link: &str) -> Result<GlmFamily, FitError> {
        let (distribution, link) = match (family, link) {
            ("gaussian", "identity") => (Distribution::Gaussian, Link::Identity),
            ("binomial", "logit") => (Distribution::Binomial, Link::Logit),
            ("binomial", "probit") => (Distribution::Binomial, Link::Probit),
            ("poisson", "log") => (Distribution::Poisson, Link::Log),
            _ => {
                return Err(FitError::InvalidInput(format!(
                    "family {family}(link = \"{link}\") is not supported: use gaussian (identity), binomial (logit or probit) or poisson (log)"
                )))
            }
        };
        Ok(GlmFamily { distribution, link })
    }

    /// True for the Poisson family with its canonical log link, whose marginal moments
    /// have closed forms.
    pub fn is_poisson_log(&self) -> bool {
        self.distribution == Distribution::Poisson && self.link == Link::Log
    }

    /// `(l, l', l'')` of the log-likelihood of a row (`y` of `n` trials) in `eta`, up to
    /// terms free of `eta`.
    #[inline]
    pub fn row_derivatives(&self, y: f64, n: f64, e: f64) -> (f64, f64, f64) {
        match (self.distribution, self.link) {
            (Distribution::Binomial, Link::Logit) => {
                // One exp and one log1p (the rows' likelihoods are most of a fit's time):
                // log(1 + exp(+-e)) = max(+-e, 0) + log1p(t), t = exp(-|e|).
                let (t, mu, var) = logit_parts(e);
                let log1p_t = t.ln_1p();
                let l = -y * ((-e).max(0.0) + log1p_t) - (n - y) * (e.max(0.0) + log1p_t);
                (l, y - n * mu, -n * var)
            }
            (Distribution::Poisson, Link::Log) => {
                let mu = e.exp();
                (y * e - mu, y - mu, -mu)
            }
            (Distribution::Binomial, Link::Probit) => {
                let phi = dnorm(e);
                let lo = pnorm(e).max(1e-300);
                let hi = pnorm(-e).max(1e-300);
                let (l1, l2) = (phi / lo, phi / hi);
                let d1 = y * l1 - (n - y) * l2;
                let d2 = -y * l1 * (e + l1) - (n - y) * l2 * (l2 - e);
                (y * lo.ln() + (n - y) * hi.ln(), d1, d2)
            }
            _ => {
                let d = self.mu_eta(e);
                let mu = self.linkinv(e);
                (
                    self.loglik(y, n, e),
                    (y - n * mu) * d / self.variance(mu).max(1e-300),
                    -n * d * d / self.variance(mu).max(1e-300),
                )
            }
        }
    }

    /// `(l', l'')` of a row's log-likelihood in `eta`: what mode searches need, without
    /// the log-likelihood's own logarithms.
    #[inline]
    pub fn row_slopes(&self, y: f64, n: f64, e: f64) -> (f64, f64) {
        if let (Distribution::Binomial, Link::Logit) = (self.distribution, self.link) {
            let (_, mu, var) = logit_parts(e);
            return (y - n * mu, -n * var);
        }
        let (_, l1, l2) = self.row_derivatives(y, n, e);
        (l1, l2)
    }
}

/// `(t, mu, mu (1 - mu))` of the logit link at `e`, `t = exp(-|e|)`, from one exp:
/// `mu (1 - mu) = t / (1 + t)^2` keeps its digits where `mu` is near 0 or 1.
#[inline]
fn logit_parts(e: f64) -> (f64, f64, f64) {
    let t = (-e.abs()).exp();
    let mu = if e >= 0.0 { 1.0 / (1.0 + t) } else { t / (1.0 + t) };
    (t, mu, t / ((1.0 + t) * (1.0 + t)))
}

/// The logistic function, accurate in both tails.
#[inline]
pub fn logistic(eta: f64) -> f64 {
    if eta >= 0.0 {
        1.0 / (1.0 + (-eta).exp())
    } else {
        let e = eta.exp();
        e / (1.0 + e)
    }
}

/// The standard normal density.
#[inline]
pub fn dnorm(x: f64) -> f64 {
    (-0.5 * x * x).exp() * 0.398_942_280_401_432_7
}

/// The standard normal distribution function, from [`erfc`].
pub fn pnorm(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// The complementary error function: the Taylor series of erf below 2, the continued
/// fraction of erfc (evaluated by Lentz's method) above, both to about 1e-15 relative.
fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf by its Taylor series, converging fast for |x| < 2.
        let mut term = x;
        let mut sum = x;
        let x2 = x * x;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() || n > 200.0 {
                break;
            }
        }
        1.0 - sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // Continued fraction (Lentz) for erfc, accurate for x >= 2.
        let tiny = 1e-300;
        let mut f = x;
        let mut c = x;
        let mut d = 0.0;
        for i in 1..200 {
            let a = i as f64 * 0.5;
            d = x + a * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = x + a / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
    }
}

/// `y log(y / mu)`, 0 at `y = 0`.
#[inline]
fn y_log_y(y: f64, mu: f64) -> f64 {
    if y > 0.0 {
        y * (y / mu).ln()
    } else {
        0.0
    }
}

impl Family for GlmFamily {
    fn linkinv(&self, eta: f64) -> f64 {
        match self.link {
            Link::Identity => eta,
            Link::Logit => logistic(eta),
            Link::Probit => pnorm(eta),
            Link::Log => eta.exp(),
        }
    }

    fn mu_eta(&self, eta: f64) -> f64 {
        match self.link {
            Link::Identity => 1.0,
            Link::Logit => {
                let m = logistic(eta);
                m * (1.0 - m)
            }
            Link::Probit => dnorm(eta),
            Link::Log => eta.exp(),
        }
    }

    fn variance(&self, mu: f64) -> f64 {
        match self.distribution {
            Distribution::Gaussian => 1.0,
            Distribution::Binomial => mu * (1.0 - mu),
            Distribution::Poisson => mu,
        }
    }

    fn loglik(&self, y: f64, n: f64, eta: f64) -> f64 {
        match (self.distribution, self.link) {
            (Distribution::Gaussian, _) => -0.5 * (y - n * eta).powi(2),
            // log(mu) = -log(1 + exp(-eta)), log(1 - mu) = -log(1 + exp(eta)), stably.
            (Distribution::Binomial, Link::Logit) => {
                let log1pexp = |x: f64| if x > 0.0 { x + (-x).exp().ln_1p() } else { x.exp().ln_1p() };
                -y * log1pexp(-eta) - (n - y) * log1pexp(eta)
            }
            (Distribution::Binomial, _) => {
                let mu = self.linkinv(eta).clamp(1e-300, 1.0 - 1e-16);
                y * mu.ln() + (n - y) * (1.0 - mu).ln()
            }
            (Distribution::Poisson, _) => {
                let mu = self.linkinv(eta);
                y * mu.ln() - n * mu
            }
        }
    }

    fn deviance(&self, y: f64, n: f64, mu: f64) -> f64 {
        match self.distribution {
            Distribution::Gaussian => (y - n * mu).powi(2),
            Distribution::Binomial => 2.0 * (y_log_y(y, n * mu) + y_log_y(n - y, n * (1.0 - mu))),
            Distribution::Poisson => 2.0 * (y_log_y(y, n * mu) - (y - n * mu)),
        }
    }

    fn has_dispersion(&self) -> bool {
        self.distribution == Distribution::Gaussian
    }
}

/// Gauss-Hermite rule of `n` nodes for `E f(Z)`, `Z ~ N(0, 1)`: nodes and weights
/// (summing to 1). The physicists' nodes come from Newton's method on the orthonormal
/// Hermite recurrence (the classical algorithm, e.g. Press et al., "gauher"), scaled by
/// sqrt(2).
pub fn gauss_hermite(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut x = vec![0.0; n];
    let mut w = vec![0.0; n];
    let pim4 = std::f64::consts::PI.powf(-0.25);
    let nf = n as f64;
    let mut z = 0.0;
    for i in 0..n.div_ceil(2) {
        z = match i {
            0 => (2.0 * nf + 1.0).sqrt() - 1.85575 * (2.0 * nf + 1.0).powf(-1.0 / 6.0),
            1 => z - 1.14 * nf.powf(0.426) / z,
            2 => 1.86 * z - 0.86 * x[0],
            3 => 1.91 * z - 0.91 * x[1],
            _ => 2.0 * z - x[i - 2],
        };
        let mut pp = 0.0;
        for _ in 0..100 {
            let (mut p1, mut p2) = (pim4, 0.0);
            for j in 1..=n {
                let p3 = p2;
                p2 = p1;
                let jf = j as f64;
                p1 = z * (2.0 / jf).sqrt() * p2 - ((jf - 1.0) / jf).sqrt() * p3;
            }
            pp = (2.0 * nf).sqrt() * p2;
            let z1 = z;
            z = z1 - p1 / pp;
            if (z - z1).abs() <= 1e-15 * z.abs().max(1.0) {
                break;
            }
        }
        x[i] = z;
        x[n - 1 - i] = -z;
        w[i] = 2.0 / (pp * pp);
        w[n - 1 - i] = w[i];
    }
    let root_pi = std::f64::consts::PI.sqrt();
    let nodes = x.iter().map(|v| v * std::f64::consts::SQRT_2).collect();
    let weights = w.iter().map(|v| v / root_pi).collect();
    (nodes, weights)
}
