//! Kernel benches: the vector exp/ln/ln_1p against their scalar twin, and the cross-entropy
//! forward and forward+gradient kernels, at every SIMD level this CPU supports.
//!
//! Run with `cargo bench --no-default-features --bench vector_math`. Prints the median of
//! several timed runs (nanoseconds per element) and the speed-up over the scalar level.

use std::hint::black_box;
use std::time::Instant;

use xent_rs::kernels::cross_entropy::{ClassOptions, cross_entropy};
use xent_rs::kernels::{Io, Layout, Reduction, Targets};
use xent_rs::simd::math::{Func, evaluate};
use xent_rs::simd::{self, Level};

/// Median seconds of `runs` calls of `f` after one warm-up call.
fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn levels() -> Vec<Level> {
    Level::ALL
        .into_iter()
        .filter(|l| l.is_supported())
        .collect()
}

fn bench_math() {
    const N: usize = 1 << 20;
    let x32: Vec<f32> = (0..N)
        .map(|i| ((i as f32) * 1e-3).sin() * 20.0 - 10.0)
        .collect();
    let p32: Vec<f32> = x32.iter().map(|v| v.abs() * 0.05 + 1e-3).collect();
    let x64: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
    let p64: Vec<f64> = p32.iter().map(|&v| v as f64).collect();
    println!("vector math, {N} elements, ns/element (speed-up over scalar)");
    for (func, name) in [
        (Func::Exp, "exp"),
        (Func::Ln, "ln"),
        (Func::Ln1p, "ln_1p"),
        (Func::Ln1pUnit, "ln_1p_unit"),
        (Func::Tanh, "tanh"),
        (Func::ExpM1, "exp_m1"),
    ] {
        let (a32, a64) = if matches!(func, Func::Exp | Func::Tanh | Func::ExpM1) {
            (&x32, &x64)
        } else {
            (&p32, &p64)
        };
        let mut out32 = vec![0.0f32; N];
        let mut out64 = vec![0.0f64; N];
        let mut base = (0.0, 0.0);
        for level in levels() {
            let t32 = median_seconds(15, || evaluate(level, func, black_box(a32), &mut out32));
            let t64 = median_seconds(15, || evaluate(level, func, black_box(a64), &mut out64));
            if level == Level::Scalar {
                base = (t32, t64);
            }
            println!(
                "  {name:6} {level:7} f32 {:6.3} ns ({:5.1}x)   f64 {:6.3} ns ({:5.1}x)",
                t32 * 1e9 / N as f64,
                base.0 / t32,
                t64 * 1e9 / N as f64,
                base.1 / t64
            );
        }
    }
}

fn bench_cross_entropy() {
    println!("cross entropy (mean), float32, 1 thread, ms (speed-up over scalar)");
    xent_rs::parallel::set_num_threads(1).expect("one thread");
    for (rows, classes) in [(1 << 17, 10usize), (8192, 1000), (256, 32_000)] {
        let logits: Vec<f32> = (0..rows * classes)
            .map(|i| ((i as f32) * 0.37).sin() * 3.0)
            .collect();
        let targets: Vec<i64> = (0..rows).map(|i| ((i * 7) % classes) as i64).collect();
        let layout = Layout {
            outer: rows,
            classes,
            inner: 1,
        };
        for softcap in [None, Some(30.0)] {
            let opts = ClassOptions {
                softcap,
                ..ClassOptions::plain(Reduction::Mean)
            };
            let mut grad = vec![0.0f32; rows * classes];
            let mut base = (0.0, 0.0);
            for level in levels() {
                simd::set_level(level).expect("supported level");
                let run = |io: Io<'_, f32>| {
                    black_box(cross_entropy(
                        io,
                        layout,
                        Targets::I64(&targets),
                        &[rows],
                        &opts,
                        None,
                    ))
                    .expect("valid call");
                };
                let fwd = median_seconds(9, || run(Io::Read(black_box(&logits))));
                let bwd = median_seconds(9, || {
                    run(Io::ReadWrite {
                        input: black_box(&logits),
                        out: &mut grad,
                    })
                });
                if level == Level::Scalar {
                    base = (fwd, bwd);
                }
                println!(
                    "  {rows:6} x {classes:6} softcap {softcap:?} {level:7} fwd {:7.2} ms ({:5.1}x)   fwd+grad {:7.2} ms ({:5.1}x)",
                    fwd * 1e3,
                    base.0 / fwd,
                    bwd * 1e3,
                    base.1 / bwd
                );
            }
        }
    }
    simd::set_level(Level::best()).expect("best level");
}

fn main() {
    bench_math();
    bench_cross_entropy();
}
