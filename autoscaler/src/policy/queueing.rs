//! The queueing model behind the `kumulus` policy: an M/G/c queue with
//! Erlang C and the Allen-Cunneen correction for service-time variability.

/// Erlang C: the probability that an arriving job waits, with `c` servers
/// and offered load `a = lambda * mean service` (erlangs). 1 when `a >= c`.
pub fn erlang_c(c: u32, a: f64) -> f64 {
    if c == 0 || a >= c as f64 {
        return 1.0;
    }
    if a <= 0.0 {
        return 0.0;
    }
    // Erlang B by its stable recursion, then C from B.
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (k as f64 + a * b);
    }
    let rho = a / c as f64;
    b / (1.0 - rho + rho * b)
}

/// The `q`-quantile of the wait in an M/G/c queue (Allen-Cunneen): the wait
/// of a job that waits is about exponential with rate (c mu - lambda) scaled
/// by 2 / (1 + cs2). Infinite when the queue is unstable.
pub fn wait_quantile(c: u32, lambda: f64, mean_service: f64, cs2: f64, q: f64) -> f64 {
    if lambda <= 0.0 {
        return 0.0;
    }
    let a = lambda * mean_service;
    if c == 0 || a >= c as f64 {
        return f64::INFINITY;
    }
    let pw = erlang_c(c, a);
    let tail = 1.0 - q;
    if pw <= tail {
        return 0.0;
    }
    let mu = 1.0 / mean_service;
    let rate = (c as f64 * mu - lambda) * 2.0 / (1.0 + cs2.max(0.0));
    (pw / tail).ln() / rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erlang_c_matches_known_values() {
        // M/M/1: P(wait) = rho.
        assert!((erlang_c(1, 0.5) - 0.5).abs() < 1e-12);
        // c = 2, a = 1: C = 1/3.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(erlang_c(3, 3.0), 1.0);
        assert_eq!(erlang_c(3, 0.0), 0.0);
    }

    #[test]
    fn wait_quantile_of_mm1() {
        // M/M/1, lambda 0.5, mean 1: P(W > t) = 0.5 e^{-0.5 t}; p95 = 2 ln 10.
        let t = wait_quantile(1, 0.5, 1.0, 1.0, 0.95);
        assert!((t - 2.0 * 10f64.ln()).abs() < 1e-9, "{t}");
        assert!(wait_quantile(1, 2.0, 1.0, 1.0, 0.95).is_infinite());
        assert_eq!(wait_quantile(4, 0.1, 1.0, 1.0, 0.95), 0.0);
    }
}
