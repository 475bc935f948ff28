//! dudect-style timing test of the secret comparisons. Two classes of wrong guesses are timed,
//! interleaved in random order: guesses that differ from the secret only in the last byte, and
//! guesses that differ in the first byte. Both fail; an early-exit comparison would take longer
//! on the first class, revealing how much of the secret a guess got right. A Welch t statistic
//! above the threshold means such a leak. A deliberately leaky comparison is measured the same
//! way as a control, to show the test can see one.

use std::hint::black_box;
use std::time::Instant;

use tokenledger::crypto::ServerKeys;
use tokenledger::crypto::credential::{self, Check};
use tokenledger::crypto::digests_equal;

use crate::harness::Rng;

/// |t| above this means "leaks" (dudect uses 4.5 after cropping).
const T_THRESHOLD: f64 = 4.5;
const MEASUREMENTS: usize = 40_000;
const CALLS_PER_MEASUREMENT: usize = 8;

/// Welch's t between the two classes, after dropping each class's slowest 10% (interrupts and
/// other noise only ever add time).
fn welch_t(mut a: Vec<f64>, mut b: Vec<f64>) -> f64 {
    for class in [&mut a, &mut b] {
        class.sort_by(f64::total_cmp);
        class.truncate(class.len() * 9 / 10);
    }
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var, n)
    };
    let (ma, va, na) = stats(&a);
    let (mb, vb, nb) = stats(&b);
    (ma - mb) / (va / na + vb / nb).sqrt()
}

/// Times `compare(input)` for inputs of class "late difference" and "early difference",
/// interleaved. Every input is its own pre-generated value, so both classes see the same memory
/// behaviour and only the comparison itself can tell them apart.
fn t_statistic<I>(late: impl Fn(&mut Rng) -> I, early: impl Fn(&mut Rng) -> I, compare: impl Fn(&I) -> bool) -> f64 {
    let mut rng = Rng(0x00c0_ffee);
    let plan: Vec<bool> = (0..MEASUREMENTS).map(|_| rng.next() & 1 == 0).collect();
    let inputs: Vec<I> = plan.iter().map(|l| if *l { late(&mut rng) } else { early(&mut rng) }).collect();
    let mut a = Vec::with_capacity(MEASUREMENTS);
    let mut b = Vec::with_capacity(MEASUREMENTS);
    for (is_late, input) in plan.iter().zip(&inputs) {
        let start = Instant::now();
        for _ in 0..CALLS_PER_MEASUREMENT {
            black_box(compare(black_box(input)));
        }
        let nanos = start.elapsed().as_nanos() as f64;
        if *is_late { a.push(nanos) } else { b.push(nanos) }
    }
    welch_t(a, b)
}

/// `secret` with byte `at` changed to a random different value.
fn differ_at(secret: &[u8], at: usize, rng: &mut Rng) -> Vec<u8> {
    let mut guess = secret.to_vec();
    guess[at] ^= 1 + (rng.next() % 255) as u8;
    guess
}

#[test]
fn digest_comparison_time_does_not_depend_on_how_much_of_the_secret_matches() {
    let secret = [0x11u8; 32];
    let as_digest = |v: Vec<u8>| -> [u8; 32] { v.try_into().unwrap() };
    let t = t_statistic(
        |rng| as_digest(differ_at(&secret, 31, rng)),
        |rng| as_digest(differ_at(&secret, 0, rng)),
        |guess| digests_equal(guess, &secret),
    );
    assert!(t.abs() < T_THRESHOLD, "digests_equal leaks timing: t = {t:.2}");
}

#[test]
fn client_secret_check_time_does_not_depend_on_how_much_of_the_secret_matches() {
    let keys = ServerKeys::from_secret(1, &[4; 32]);
    let secret = credential::generate_secret();
    let stored = credential::keyed_digest(&keys, "client", &secret);
    // Guesses stay printable ASCII of the same length, like real ones.
    let guess = |at: usize, rng: &mut Rng| {
        let mut bytes = secret.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'a' + (rng.next() % 26) as u8 } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let last = secret.len() - 1;
    let t = t_statistic(
        |rng| guess(last, rng),
        |rng| guess(0, rng),
        |input| credential::verify_fast(&keys, "client", input, &stored) == Check::Match,
    );
    assert!(t.abs() < T_THRESHOLD, "client secret check leaks timing: t = {t:.2}");
}

#[test]
fn the_test_detects_an_early_exit_comparison() {
    // A classic leak: comparing byte by byte and returning at the first difference.
    let secret = vec![0x22u8; 4096];
    let t = t_statistic(
        |rng| differ_at(&secret, 4095, rng),
        |rng| differ_at(&secret, 0, rng),
        |guess| leaky_equal(guess, &secret),
    );
    assert!(t.abs() > T_THRESHOLD, "the control leak was not detected: t = {t:.2}");
}

fn leaky_equal(a: &[u8], b: &[u8]) -> bool {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return false;
        }
    }
    a.len() == b.len()
}
