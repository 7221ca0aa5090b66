//! Tests of bfloat16 through every kernel, every layout of the row driver and every
//! instruction set ([`Stage`](crate::kernels::stage::Stage) at work): the same bits as
//! float32 on the widened values, rounded.

use crate::float::Bf16;
use crate::kernels::binary::{self, BinaryOptions, Broadcast};
use crate::kernels::cross_entropy::{self as ce, ClassOptions};
use crate::kernels::testing::{at_every_level, exclusive, layouts, values};
use crate::kernels::{GradOutput, Io, Layout, Partial, Reduction, Targets, softmax};

fn bf16s(v: &[f64]) -> Vec<Bf16> {
    v.iter().map(|&x| Bf16::from_f32(x as f32)).collect()
}

fn wide(v: &[Bf16]) -> Vec<f32> {
    v.iter().map(|b| b.to_f32()).collect()
}

/// Asserts that bfloat16 results are the float32 ones, rounded.
fn same(got: &[Bf16], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.0, Bf16::from_f32(*w).0, "{what} at {i}: {w}");
    }
}

/// Positive values summing to about 1 per row, for soft targets.
fn probabilities(n: usize, classes: usize, seed: u64) -> Vec<f64> {
    values(n, seed, 1.0)
        .iter()
        .map(|v| v.abs() * 2.0 / classes.max(1) as f64)
        .collect()
}

/// One layout: every softmax-family op and every class loss, bfloat16 against float32.
fn check_layout(layout: Layout, what: &str) {
    let (n, rows) = (layout.len(), layout.rows());
    let x = bf16s(&values(n, 11, 12.0));
    let xw = wide(&x);

    for (name, f32_op, bf16_op) in [
        (
            "log_softmax",
            softmax::log_softmax::<f32> as fn(Io<'_, f32>, Layout) -> _,
            softmax::log_softmax::<Bf16> as fn(Io<'_, Bf16>, Layout) -> _,
        ),
        ("softmax", softmax::softmax::<f32>, softmax::softmax::<Bf16>),
    ] {
        let (mut want, mut got) = (vec![0f32; n], vec![Bf16(0); n]);
        f32_op(
            Io::ReadWrite {
                input: &xw,
                out: &mut want,
            },
            layout,
        )
        .unwrap();
        bf16_op(
            Io::ReadWrite {
                input: &x,
                out: &mut got,
            },
            layout,
        )
        .unwrap();
        same(&got, &want, &format!("{what} {name}"));
        let mut inplace = x.clone();
        bf16_op(Io::InPlace(&mut inplace), layout).unwrap();
        same(&inplace, &want, &format!("{what} {name} in place"));
    }

    let (mut want, mut got) = (vec![0f32; rows], vec![Bf16(0); rows]);
    softmax::logsumexp(&xw, layout, &mut want).unwrap();
    softmax::logsumexp(&x, layout, &mut got).unwrap();
    same(&got, &want, &format!("{what} logsumexp"));

    let g = bf16s(&values(n, 12, 1.0));
    let y = bf16s(&values(n, 13, 1.0));
    let (gw, yw) = (wide(&g), wide(&y));
    for log in [true, false] {
        let (mut want, mut got) = (vec![0f32; n], vec![Bf16(0); n]);
        if log {
            softmax::log_softmax_backward(&gw, &yw, layout, &mut want).unwrap();
            softmax::log_softmax_backward(&g, &y, layout, &mut got).unwrap();
        } else {
            softmax::softmax_backward(&gw, &yw, layout, &mut want).unwrap();
            softmax::softmax_backward(&g, &y, layout, &mut got).unwrap();
        }
        same(&got, &want, &format!("{what} backward (log {log})"));
    }

    let classes = layout.classes as i64;
    let labels: Vec<i64> = (0..rows as i64)
        .map(|r| {
            if r % 7 == 3 {
                -100
            } else {
                (r * 5 + 1) % classes.max(1)
            }
        })
        .collect();
    let weight: Vec<f32> = (0..layout.classes).map(|c| 0.5 + (c % 4) as f32).collect();
    let shape = [rows];
    for (weighted, reduction, smoothing) in [
        (false, Reduction::Mean, 0.0),
        (true, Reduction::None, 0.1),
        (false, Reduction::Sum, 0.2),
    ] {
        let opts = ClassOptions {
            weight: weighted.then_some(&weight[..]),
            label_smoothing: smoothing,
            grad_output: GradOutput::Scalar(1.5),
            ..ClassOptions::plain(reduction)
        };
        let none = reduction == Reduction::None;
        // The reduced call without gradient (targets checked in the pass), then the call
        // with gradient and per-sample losses.
        let want = ce::cross_entropy(
            Io::Read(&xw),
            layout,
            Targets::I64(&labels),
            &shape,
            &opts,
            None,
        );
        let got = ce::cross_entropy(
            Io::Read(&x),
            layout,
            Targets::I64(&labels),
            &shape,
            &opts,
            None,
        );
        if !none {
            assert_eq!(
                got.unwrap(),
                want.unwrap(),
                "{what} cross_entropy {reduction:?}"
            );
        }
        let (mut wg, mut gg) = (vec![0f32; n], vec![Bf16(0); n]);
        let (mut wl, mut gl) = (vec![0f32; rows], vec![Bf16(0); rows]);
        let io = Io::ReadWrite {
            input: &xw,
            out: &mut wg,
        };
        let want = ce::cross_entropy(
            io,
            layout,
            Targets::I64(&labels),
            &shape,
            &opts,
            none.then_some(&mut wl[..]),
        )
        .unwrap();
        let io = Io::ReadWrite {
            input: &x,
            out: &mut gg,
        };
        let got = ce::cross_entropy(
            io,
            layout,
            Targets::I64(&labels),
            &shape,
            &opts,
            none.then_some(&mut gl[..]),
        )
        .unwrap();
        assert_eq!(got, want, "{what} cross_entropy sums");
        same(&gg, &wg, &format!("{what} cross_entropy grad"));
        if none {
            same(&gl, &wl, &format!("{what} cross_entropy losses"));
        }

        if smoothing == 0.0 {
            let (mut wg, mut gg) = (vec![0f32; n], vec![Bf16(0); n]);
            let io = Io::ReadWrite {
                input: &xw,
                out: &mut wg,
            };
            let want =
                ce::nll_loss(io, layout, Targets::I64(&labels), &shape, &opts, None).unwrap();
            let io = Io::ReadWrite {
                input: &x,
                out: &mut gg,
            };
            let got = ce::nll_loss(io, layout, Targets::I64(&labels), &shape, &opts, None).unwrap();
            assert_eq!(got, want, "{what} nll_loss");
            same(&gg, &wg, &format!("{what} nll_loss grad"));
        }

        let t = bf16s(&probabilities(n, layout.classes, 14));
        let tw = wide(&t);
        let (mut wg, mut gg) = (vec![0f32; n], vec![Bf16(0); n]);
        let (mut wl, mut gl) = (vec![0f32; rows], vec![Bf16(0); rows]);
        let io = Io::ReadWrite {
            input: &xw,
            out: &mut wg,
        };
        let want =
            ce::cross_entropy_soft(io, layout, &tw, &opts, none.then_some(&mut wl[..])).unwrap();
        let io = Io::ReadWrite {
            input: &x,
            out: &mut gg,
        };
        let got =
            ce::cross_entropy_soft(io, layout, &t, &opts, none.then_some(&mut gl[..])).unwrap();
        assert_eq!(got, want, "{what} soft targets");
        same(&gg, &wg, &format!("{what} soft targets grad"));
        if none {
            same(&gl, &wl, &format!("{what} soft targets losses"));
        }
    }
}

#[test]
fn bfloat16_row_kernels_give_the_float32_results_rounded() {
    let _g = exclusive();
    let mut all = layouts();
    // Rows long enough to be prefetched (in float32), and more classes than a strided
    // tile holds (gathered rows).
    all.push(Layout {
        outer: 3,
        classes: 3000,
        inner: 1,
    });
    all.push(Layout {
        outer: 1,
        classes: (1 << 16) + 3,
        inner: 2,
    });
    at_every_level(|level| {
        for layout in &all {
            check_layout(*layout, &format!("{level} {layout:?}"));
        }
    });
}

#[test]
fn bfloat16_binary_losses_give_the_float32_results_rounded() {
    let _g = exclusive();
    let n = 3 * 512 + 77;
    let logits = bf16s(&values(n, 21, 30.0));
    let probs = bf16s(
        &values(n, 22, 1.0)
            .iter()
            .map(|v| v.abs())
            .collect::<Vec<_>>(),
    );
    let t = bf16s(
        &values(n, 23, 1.0)
            .iter()
            .map(|v| v.abs())
            .collect::<Vec<_>>(),
    );
    let w: Vec<f32> = (0..7).map(|i| 0.5 + i as f32).collect();
    let (logits_w, probs_w, tw) = (wide(&logits), wide(&probs), wide(&t));
    at_every_level(|level| {
        for logit in [true, false] {
            let opts = BinaryOptions {
                weight: Some(Broadcast {
                    values: &w,
                    repeat: 3,
                }),
                pos_weight: logit.then_some(Broadcast {
                    values: &w[..5],
                    repeat: 1,
                }),
                reduction: Reduction::None,
                grad_output: GradOutput::Scalar(0.5),
            };
            let (x, xw) = if logit {
                (&logits, &logits_w)
            } else {
                (&probs, &probs_w)
            };
            let (mut wg, mut gg) = (vec![0f32; n], vec![Bf16(0); n]);
            let (mut wl, mut gl) = (vec![0f32; n], vec![Bf16(0); n]);
            let io = Io::ReadWrite {
                input: &xw[..],
                out: &mut wg,
            };
            let io_b = Io::ReadWrite {
                input: &x[..],
                out: &mut gg,
            };
            let (want, got): (Partial, Partial) = if logit {
                (
                    binary::binary_cross_entropy_with_logits(io, &tw, &opts, Some(&mut wl))
                        .unwrap(),
                    binary::binary_cross_entropy_with_logits(io_b, &t, &opts, Some(&mut gl))
                        .unwrap(),
                )
            } else {
                (
                    binary::binary_cross_entropy(io, &tw, &[n], &opts, Some(&mut wl)).unwrap(),
                    binary::binary_cross_entropy(io_b, &t, &[n], &opts, Some(&mut gl)).unwrap(),
                )
            };
            assert_eq!(got, want, "{level} logits {logit}");
            same(&gg, &wg, &format!("{level} logits {logit} grad"));
            same(&gl, &wl, &format!("{level} logits {logit} losses"));
        }
    });
    // A probability out of range is refused by name, widened.
    let mut bad = probs.clone();
    bad[600] = Bf16::from_f32(1.5);
    let opts = BinaryOptions {
        weight: None,
        pos_weight: None,
        reduction: Reduction::Mean,
        grad_output: GradOutput::Scalar(1.0),
    };
    let err = binary::binary_cross_entropy(Io::Read(&bad), &t, &[n], &opts, None).unwrap_err();
    assert!(
        err.to_string().contains("got 1.5 at position (600,)"),
        "{err}"
    );
}
