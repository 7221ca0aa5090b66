"""The ``xent-rs`` command line (also ``python -m xent_rs``).

``xent-rs score PRED TARGET`` scores predictions stored in files (``.npy``, memory-mapped so
files bigger than memory work; ``.npz``; Parquet and Arrow with pyarrow) chunk by chunk through
the streaming accumulators, and prints the loss, the row count and the throughput (or one JSON
object with ``--json``). ``xent-rs demo`` makes a synthetic dataset, scores it the same way and
compares the time with plain NumPy.

A bad file (missing, wrong shape or dtype, truncated, labels out of range) gives a one-line
error naming the file and the problem, and exit status 1; bad usage gives exit status 2.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import numpy as np

from xent_rs import _core, _errors, streaming
from xent_rs._files import DataError, Source, open_source, same_file

__all__ = ["ScoreReport", "main", "score_files"]

#: What ``--loss`` names: every loss with an accumulator, ``log_loss`` first (the default).
LOSSES = ("log_loss", *(name for name in streaming.LOSSES if name != "log_loss"))
_ALIASES = {"ce": "cross_entropy", "nll": "nll_loss", "bce": "binary_cross_entropy"}
_CHUNK_BYTES = 32 << 20  # default chunk: about 32 MiB of predictions


class UsageError(Exception):
    """Bad command-line arguments (exit status 2)."""


@dataclass
class ScoreReport:
    """What ``score`` found: the loss and how it was computed."""

    loss: str
    reduction: str
    value: float
    rows: int
    count: int
    loss_sum: float
    denominator: float
    chunks: int
    chunk_rows: int
    seconds: float
    rows_per_second: float
    bytes_read: int
    pred: str
    target: str
    weight: str | None
    per_row: str | None


# ---------------------------------------------------------------------------------------------
# scoring files
# ---------------------------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on a terminal (nothing elsewhere)."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.start = time.perf_counter()
        self.last = 0.0
        self.shown = False

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.1 and done < self.total):
            return
        self.last = now
        fraction = done / self.total if self.total else 1.0
        width = 30
        filled = int(width * fraction)
        rate = done / max(now - self.start, 1e-9)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%}  "
            f"{done:,}/{self.total:,} rows  {rate / 1e6:.1f} M rows/s "
        )
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()


def _check_labels(
    target: Source, chunk: np.ndarray, start: int, classes: int, ignore_index: int | None
) -> None:
    """Every label of an integer target chunk is a class index (or ``ignore_index``)."""
    if chunk.size == 0:
        return
    low, high = int(chunk.min()), int(chunk.max())
    if low >= 0 and high < classes:
        return
    bad = (chunk < 0) | (chunk >= classes)
    if ignore_index is not None:
        bad &= chunk != ignore_index
    if not bad.any():
        return
    where = np.unravel_index(int(np.argmax(bad)), chunk.shape)
    value = chunk[where]
    row = start + int(where[0])
    position = f"row {row:,}" + (
        f", position {tuple(int(i) for i in where[1:])}" if chunk.ndim > 1 else ""
    )
    allowed = f"0..{classes - 1}" + (f" or {ignore_index}" if ignore_index is not None else "")
    raise DataError(target.name, f"label {value} at {position} is not a class index ({allowed})")


def _locate(acc: streaming.Accumulator, x: np.ndarray, start: int) -> str | None:
    """The first row of a chunk holding NaN, or a probability outside [0, 1]."""
    if x.dtype.kind != "f":
        return None
    with np.errstate(invalid="ignore"):
        values = np.asarray(x)
        bad = np.isnan(values)
        probabilities = isinstance(acc, streaming.BinaryCrossEntropyAccumulator) or (
            isinstance(acc, streaming.LogLossAccumulator) and not acc.from_logits
        )
        if probabilities:
            bad |= (values < 0) | (values > 1)
    if not bad.any():
        return None
    where = np.unravel_index(int(np.argmax(bad)), bad.shape)
    return f"row {start + int(where[0]):,} (value {values[where]})"


def _kind(dtype: np.dtype[Any]) -> str:
    """A dtype as a person would name it in a message."""
    return {"U": "text", "S": "bytes", "O": "Python object"}.get(dtype.kind, str(dtype))


def _check_shapes(
    loss: str,
    acc: streaming.Accumulator,
    pred: Source,
    target: Source,
    weight: Source | None,
) -> tuple[int | None, int | None]:
    """Checks the files against each other; returns (classes, class axis) for class losses."""
    if pred.dtype.kind not in "fiub":
        raise DataError(pred.name, f"holds {_kind(pred.dtype)} values; predictions must be numbers")
    if target.rows != pred.rows:
        raise DataError(target.name, f"has {target.rows:,} rows but {pred.name} has {pred.rows:,}")
    if weight is not None:
        if weight.rows != pred.rows:
            raise DataError(
                weight.name, f"has {weight.rows:,} rows but {pred.name} has {pred.rows:,}"
            )
        if weight.dtype.kind not in "fiub":
            raise DataError(
                weight.name, f"holds {_kind(weight.dtype)} values; weights must be numbers"
            )
    if isinstance(acc, streaming.LogLossAccumulator):
        if len(pred.shape) > 2:
            raise DataError(
                pred.name, f"has shape {pred.shape}; log_loss takes (rows,) or (rows, classes)"
            )
        if len(target.shape) != 1:
            raise DataError(target.name, f"has shape {target.shape}; expected one label per row")
        if weight is not None and len(weight.shape) != 1:
            raise DataError(weight.name, f"has shape {weight.shape}; expected one weight per row")
        classes = 2 if len(pred.shape) == 1 or pred.shape[1] == 1 else pred.shape[1]
        if acc.labels is not None and len(acc.labels) != classes:
            raise DataError(
                pred.name,
                f"has {classes} class columns but --labels names {len(acc.labels)} classes",
            )
        if acc.labels is None and target.dtype.kind not in "iub":
            raise DataError(
                target.name,
                f"holds {_kind(target.dtype)} labels; give every class with --labels "
                "(only integer labels 0..C-1 can go without)",
            )
        return (classes if acc.labels is None and target.dtype.kind in "iu" else None), None
    if isinstance(acc, streaming._ClassAccumulator):
        if len(pred.shape) < 2:
            raise DataError(pred.name, f"has shape {pred.shape}; {loss} needs (rows, classes, ...)")
        axis = acc.axis % len(pred.shape) if -len(pred.shape) <= acc.axis < len(pred.shape) else -1
        if axis < 1:
            raise UsageError(
                f"--axis {acc.axis} must name a class axis other than the rows (axis 0) of "
                f"the predictions of shape {pred.shape}"
            )
        hard_shape = pred.shape[:axis] + pred.shape[axis + 1 :]
        if target.dtype.kind in "iu":
            if target.shape != hard_shape:
                raise DataError(
                    target.name,
                    f"has shape {target.shape}; class indices for predictions of shape "
                    f"{pred.shape} (classes on axis {axis}) need shape {hard_shape}",
                )
        elif target.dtype.kind == "f" and isinstance(acc, streaming.CrossEntropyAccumulator):
            if target.shape != pred.shape:
                hint = " (cast class indices to integers)" if target.shape == hard_shape else ""
                raise DataError(
                    target.name,
                    f"holds floats of shape {target.shape}: class probabilities need the "
                    f"predictions' shape {pred.shape}{hint}",
                )
        else:
            raise DataError(
                target.name,
                f"holds {_kind(target.dtype)} values; {loss} needs integer class indices",
            )
        if weight is not None and weight.shape != hard_shape:
            raise DataError(
                weight.name,
                f"has shape {weight.shape}; expected one weight per sample {hard_shape}",
            )
        return pred.shape[axis], axis
    # binary cross entropy: one target per prediction
    if target.shape != pred.shape:
        raise DataError(
            target.name, f"has shape {target.shape} but {pred.name} has shape {pred.shape}"
        )
    if target.dtype.kind not in "fiub":
        raise DataError(target.name, f"holds {_kind(target.dtype)} values; targets must be numbers")
    if weight is not None and weight.shape not in ((pred.rows,), pred.shape):
        raise DataError(
            weight.name, f"has shape {weight.shape}; expected one weight per row ({pred.rows},)"
        )
    return None, None


def default_chunk_rows(pred: Source) -> int:
    """Rows per chunk for about 32 MiB of predictions."""
    return max(1024, _CHUNK_BYTES // max(pred.row_bytes, 1))


def score_files(
    pred: Source,
    target: Source,
    acc: streaming.Accumulator,
    *,
    loss: str,
    weight: Source | None = None,
    chunk_rows: int | None = None,
    per_row: str | None = None,
    progress: bool = False,
    ignore_index: int | None = None,
) -> ScoreReport:
    """Scores ``pred`` against ``target`` chunk by chunk into ``acc``.

    Raises :class:`DataError` naming the file at fault.
    """
    classes, _ = _check_shapes(loss, acc, pred, target, weight)
    rows = pred.rows
    chunk = chunk_rows or default_chunk_rows(pred)
    out: np.ndarray | None = None
    if per_row is not None:
        out = _open_per_row(per_row, acc, pred, target)
    bar = _Progress(rows, sys.stderr, progress)
    start_time = time.perf_counter()
    chunks = 0
    try:
        for start in range(0, max(rows, 1), chunk):
            stop = min(start + chunk, rows)
            x = pred.read(start, stop)
            t = target.read(start, stop)
            w = None if weight is None else weight.read(start, stop)
            if classes is not None and t.dtype.kind in "iu":
                _check_labels(target, t, start, classes, ignore_index)
            try:
                if out is None:
                    acc.update(x, t, w)
                else:
                    out[start:stop] = acc.update(x, t, w, return_losses=True)
            except (ValueError, TypeError, IndexError) as exc:
                rows_text = f"rows {start:,} to {max(stop - 1, start):,}"
                argument = _errors.argument_of(exc)
                if argument in ("y_true", "target"):
                    position = _errors.position_of(exc)
                    labels = getattr(acc, "labels", None)
                    if position is not None:
                        rows_text = f"row {start + position[0]:,}"
                    elif labels is not None and t.ndim == 1:
                        row = start + int(np.argmax(~np.isin(t, labels)))
                        rows_text = f"row {row:,} (label {t[row - start].item()!r})"
                    raise DataError(target.name, f"{rows_text}: {_one_line(exc)}") from None
                if argument == "sample_weight" and weight is not None:
                    raise DataError(weight.name, f"{rows_text}: {_one_line(exc)}") from None
                where = _locate(acc, x, start) or rows_text
                raise DataError(pred.name, f"{where}: {_one_line(exc)}") from None
            chunks += 1
            bar.update(stop)
        if isinstance(out, np.memmap):
            out.flush()
    except BaseException:
        bar.finish()
        if per_row is not None:
            del out
            _remove_quietly(per_row)
        raise
    bar.finish()
    seconds = time.perf_counter() - start_time
    bytes_read = rows * (pred.row_bytes + target.row_bytes + (weight.row_bytes if weight else 0))
    try:
        value = acc.result()
    except ValueError as exc:  # log_loss of no rows or of zero total weight
        raise DataError(pred.name, _one_line(exc)) from None
    return ScoreReport(
        loss=loss,
        reduction=acc.reduction,
        value=value,
        rows=rows,
        count=acc.count,
        loss_sum=acc.loss_sum,
        denominator=acc.denominator,
        chunks=chunks,
        chunk_rows=chunk,
        seconds=seconds,
        rows_per_second=rows / seconds if seconds > 0 else math.inf,
        bytes_read=bytes_read,
        pred=pred.name,
        target=target.name,
        weight=None if weight is None else weight.name,
        per_row=per_row,
    )


def _open_per_row(
    path: str, acc: streaming.Accumulator, pred: Source, target: Source
) -> np.ndarray:
    if not path.lower().endswith(".npy"):
        raise DataError(path, "--per-row writes a .npy file; name it OUT.npy")
    if isinstance(acc, streaming._BinaryAccumulator):
        shape = pred.shape
    elif isinstance(acc, streaming.LogLossAccumulator):
        shape = (pred.rows,)
    else:
        shape = target.shape if target.dtype.kind in "iu" else _drop_axis(pred.shape, acc)
    dtype = np.dtype(np.float64) if pred.dtype.kind != "f" else pred.dtype
    try:
        out: np.ndarray = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    except OSError as exc:
        raise DataError(path, f"cannot be written ({exc.strerror or exc})") from None
    return out


def _drop_axis(shape: tuple[int, ...], acc: streaming.Accumulator) -> tuple[int, ...]:
    axis = getattr(acc, "axis", -1) % len(shape)
    return shape[:axis] + shape[axis + 1 :]


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xent-rs",
        description="Score predictions (probabilities or logits) stored in files, fast, "
        "chunk by chunk; files bigger than memory work.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_core.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{score,demo}")
    score = sub.add_parser(
        "score",
        help="score the predictions in PRED against the targets in TARGET",
        description="Score PRED against TARGET chunk by chunk. Files: .npy (memory-mapped), "
        ".npz (FILE.npz:NAME picks an array), Parquet and Arrow/Feather with pyarrow "
        "(FILE.parquet:COL1,COL2 or FILE.parquet:p* picks columns; several columns, or one "
        "list column, make the class axis).",
    )
    score.add_argument("pred", metavar="PRED", help="predictions: probabilities or logits")
    score.add_argument("target", metavar="TARGET", help="labels (or targets)")
    score.add_argument(
        "--loss",
        default="log_loss",
        metavar="LOSS",
        help="log_loss (default: probabilities, scikit-learn's), cross_entropy (logits), "
        "nll_loss (log-probabilities), focal_loss (logits), binary_cross_entropy "
        "(probabilities; with --from-logits: binary_cross_entropy_with_logits), "
        "binary_focal_loss_with_logits (logits), kl_div (log-probabilities against target "
        "probabilities)",
    )
    score.add_argument(
        "--from-logits",
        action="store_true",
        help="PRED holds logits (log_loss and binary_cross_entropy)",
    )
    score.add_argument(
        "--axis", type=int, default=-1, help="class axis of PRED (cross_entropy, nll_loss)"
    )
    score.add_argument("--weight", metavar="FILE", help="per-row sample weights")
    score.add_argument(
        "--class-weight",
        metavar="W",
        help="per-class weights: comma-separated numbers or a .npy file",
    )
    score.add_argument(
        "--pos-weight",
        metavar="W",
        help="positive-class weights (binary_cross_entropy --from-logits)",
    )
    score.add_argument(
        "--labels", help="every class label, comma-separated (log_loss of non-integer labels)"
    )
    score.add_argument(
        "--ignore-index", type=int, default=None, help="label to skip (default -100)"
    )
    score.add_argument("--label-smoothing", type=float, default=None)
    score.add_argument("--z-loss", type=float, default=None, help="z-loss scale (cross_entropy)")
    score.add_argument(
        "--softcap", type=float, default=None, help="logit soft-capping value (cross_entropy)"
    )
    score.add_argument(
        "--gamma", type=float, default=None, help="focusing exponent (focal losses; default 2)"
    )
    score.add_argument(
        "--alpha",
        default=None,
        help="positive-class weight in [0, 1], or none (binary_focal_loss_with_logits; "
        "default 0.25)",
    )
    score.add_argument(
        "--log-target", action="store_true", help="TARGET holds log-probabilities (kl_div)"
    )
    score.add_argument("--reduction", choices=("mean", "sum", "batchmean"), default="mean")
    score.add_argument("--chunk-rows", type=int, metavar="N", help="rows per chunk")
    score.add_argument("--per-row", metavar="OUT.npy", help="write the per-row losses here")
    score.add_argument("--json", action="store_true", help="print one JSON object")
    score.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    demo = sub.add_parser(
        "demo",
        help="score a synthetic dataset and compare with plain NumPy",
        description="Make a realistic synthetic dataset (logits of a 10-class model and the "
        "true labels, as .npy files), score it through the same path as 'score', and "
        "compare the result and the time with plain NumPy.",
    )
    demo.add_argument("--rows", type=int, default=4_000_000)
    demo.add_argument("--classes", type=int, default=10)
    demo.add_argument("--chunk-rows", type=int, metavar="N")
    demo.add_argument("--dir", help="write the dataset here and keep it (default: a temp dir)")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _loss_name(args: argparse.Namespace) -> str:
    name = str(args.loss).replace("-", "_").lower()
    name = _ALIASES.get(name, name)
    if name not in LOSSES:
        raise UsageError(f"unknown --loss {args.loss!r}; expected one of {', '.join(LOSSES)}")
    if args.from_logits:
        if name == "nll_loss":
            raise UsageError(
                "--from-logits does not apply to nll_loss (it takes log-probabilities); "
                "score logits with --loss cross_entropy"
            )
        if name == "binary_cross_entropy":
            name = "binary_cross_entropy_with_logits"
    return name


def _numbers(text: str | None, what: str) -> np.ndarray | None:
    if text is None:
        return None
    if text.lower().endswith(".npy"):
        source = open_source(text)
        try:
            values = np.array(source.read(0, source.rows), dtype=np.float64)
        finally:
            source.close()
        return values
    try:
        return np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers or a .npy file") from None


#: The flags that set an accumulator option, by option (``None``: the flag was not given).
_OPTION_FLAGS = {
    "axis": "--axis",
    "weight": "--class-weight",
    "pos_weight": "--pos-weight",
    "ignore_index": "--ignore-index",
    "label_smoothing": "--label-smoothing",
    "z_loss": "--z-loss",
    "softcap": "--softcap",
    "gamma": "--gamma",
    "alpha": "--alpha",
    "log_target": "--log-target",
    "labels": "--labels",
}


def _option_values(args: argparse.Namespace) -> dict[str, Any]:
    """The accumulator options the command line gives (only the flags that were given)."""
    given: dict[str, Any] = {
        "axis": None if args.axis == -1 else args.axis,
        "weight": _numbers(args.class_weight, "--class-weight"),
        "pos_weight": _numbers(args.pos_weight, "--pos-weight"),
        "ignore_index": args.ignore_index,
        "label_smoothing": args.label_smoothing,
        "z_loss": args.z_loss,
        "softcap": args.softcap,
        "gamma": args.gamma,
        "alpha": _alpha(args.alpha),
        "log_target": True if args.log_target else None,
        "labels": None if args.labels is None else _parse_labels(args.labels),
    }
    return {name: value for name, value in given.items() if value is not None}


def _alpha(text: str | None) -> float | str | None:
    if text is None:
        return None
    if text.lower() == "none":
        return "none"
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--alpha must be a number in [0, 1] or none, got {text!r}") from None


def _accumulator(loss: str, args: argparse.Namespace) -> streaming.Accumulator:
    """The loss's accumulator with the options of the flags; a flag the loss has no option
    for is a usage error, and so is a value its options refuse (``_spec``'s message)."""
    cls = streaming.accumulator_class(loss)
    accepted = inspect.signature(cls).parameters
    options = _option_values(args)
    for name in options:
        if name not in accepted:
            raise UsageError(f"{_OPTION_FLAGS[name]} does not apply to {loss}")
    if options.get("alpha") == "none":
        options["alpha"] = None
    if loss == "log_loss":
        options["normalize"] = args.reduction != "sum"
        options["from_logits"] = bool(args.from_logits)
    else:
        options["reduction"] = args.reduction
    return cls(**options)


def _parse_labels(text: str) -> np.ndarray:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return np.array([int(p) for p in parts])
    except ValueError:
        return np.array(parts)


def _format_rate(rows_per_second: float) -> str:
    if not math.isfinite(rows_per_second):
        return "-"
    if rows_per_second >= 1e6:
        return f"{rows_per_second / 1e6:.1f} M rows/s"
    return f"{rows_per_second / 1e3:.1f} k rows/s"


def _print_report(report: ScoreReport, as_json: bool, stream: TextIO) -> None:
    if as_json:
        data = asdict(report)
        for key in ("value", "loss_sum", "denominator", "rows_per_second"):
            if not math.isfinite(data[key]):
                data[key] = None if math.isnan(data[key]) else str(data[key])
        stream.write(json.dumps(data) + "\n")
        return
    stream.write(f"{report.loss} ({report.reduction}): {report.value:.10g}\n")
    stream.write(
        f"rows: {report.rows:,} in {report.chunks} chunk{'s' if report.chunks != 1 else ''}"
        f" of up to {report.chunk_rows:,}\n"
    )
    megabytes = report.bytes_read / max(report.seconds, 1e-9) / 1e6
    stream.write(
        f"time: {report.seconds:.3f} s ({_format_rate(report.rows_per_second)}, "
        f"{megabytes:,.0f} MB/s)\n"
    )
    if report.per_row:
        stream.write(f"per-row losses: {report.per_row}\n")


def _score_command(args: argparse.Namespace) -> int:
    loss = _loss_name(args)
    try:
        acc = _accumulator(loss, args)
    except (ValueError, TypeError) as exc:  # an option's value the loss refuses
        raise UsageError(_one_line(exc)) from None
    if args.chunk_rows is not None and args.chunk_rows < 1:
        raise UsageError("--chunk-rows must be at least 1")
    if args.weight is not None and isinstance(acc, streaming.KLDivAccumulator):
        raise UsageError("--weight does not apply to kl_div (it has no weights)")
    if args.per_row is not None:
        # --per-row is truncated before the inputs are read: naming an input would destroy it.
        for spec in (args.pred, args.target, args.weight):
            if spec is not None and same_file(args.per_row, spec):
                raise DataError(args.per_row, f"is the input {spec}; --per-row needs a new file")
    sources: list[Source] = []
    try:
        pred = open_source(args.pred)
        sources.append(pred)
        target = open_source(args.target)
        sources.append(target)
        weight = None
        if args.weight is not None:
            weight = open_source(args.weight)
            sources.append(weight)
        progress = sys.stderr.isatty() if args.progress is None else bool(args.progress)
        report = score_files(
            pred,
            target,
            acc,
            loss=loss,
            weight=weight,
            chunk_rows=args.chunk_rows,
            per_row=args.per_row,
            progress=progress and not args.json if args.progress is None else progress,
            ignore_index=getattr(acc, "ignore_index", None),
        )
    finally:
        for source in sources:
            source.close()
    _print_report(report, bool(args.json), sys.stdout)
    return 0


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


def _make_dataset(directory: str, rows: int, classes: int) -> tuple[str, str]:
    """Logits of a decent ``classes``-way model and the true labels, written block by block."""
    rng = np.random.default_rng(2024)
    pred_path = os.path.join(directory, "logits.npy")
    label_path = os.path.join(directory, "labels.npy")
    logits = np.lib.format.open_memmap(
        pred_path, mode="w+", dtype=np.float32, shape=(rows, classes)
    )
    labels = np.lib.format.open_memmap(label_path, mode="w+", dtype=np.int64, shape=(rows,))
    block = 1 << 18
    prior = np.log(np.linspace(1.0, 3.0, classes)).astype(np.float32)  # imbalanced classes
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        n = stop - start
        y = rng.integers(0, classes, size=n)
        x = rng.standard_normal((n, classes), dtype=np.float32)
        x *= 1.5
        x += prior
        # the model is right more often than not, with varying confidence
        x[np.arange(n), y] += rng.gamma(2.0, 1.2, size=n).astype(np.float32)
        logits[start:stop] = x
        labels[start:stop] = y
    logits.flush()
    labels.flush()
    del logits, labels
    return pred_path, label_path


def _numpy_cross_entropy(pred_path: str, label_path: str) -> float:
    """The plain NumPy way: load everything, stable log-softmax, pick the true class."""
    x = np.load(pred_path)
    y = np.load(label_path)
    m = x.max(axis=1, keepdims=True)
    shifted = x - m
    lse = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(lse - shifted[np.arange(len(y)), y]))


def _demo_command(args: argparse.Namespace) -> int:
    if args.rows < 1 or args.classes < 2:
        raise UsageError("--rows must be at least 1 and --classes at least 2")
    keep = args.dir is not None
    directory = args.dir if keep else tempfile.mkdtemp(prefix="xent-rs-demo-")
    out = sys.stdout
    try:
        if keep:
            os.makedirs(directory, exist_ok=True)
        made = time.perf_counter()
        pred_path, label_path = _make_dataset(directory, args.rows, args.classes)
        made = time.perf_counter() - made
        size = args.rows * args.classes * 4
        if not args.json:
            out.write(
                f"dataset: {args.rows:,} rows x {args.classes} classes of float32 logits "
                f"({size / 1e6:,.0f} MB) and int64 labels, made in {made:.1f} s\n"
                f"  {pred_path}\n  {label_path}\n"
            )
            out.flush()
        pred, target = open_source(pred_path), open_source(label_path)
        try:
            report = score_files(
                pred,
                target,
                streaming.CrossEntropyAccumulator(),
                loss="cross_entropy",
                chunk_rows=args.chunk_rows,
                progress=False,
            )
        finally:
            pred.close()
            target.close()
        start = time.perf_counter()
        reference = _numpy_cross_entropy(pred_path, label_path)
        numpy_seconds = time.perf_counter() - start
        ratio = numpy_seconds / report.seconds if report.seconds > 0 else math.inf
        difference = abs(report.value - reference) / max(abs(reference), 1e-300)
        if args.json:
            out.write(
                json.dumps(
                    {
                        "rows": args.rows,
                        "classes": args.classes,
                        "xent_rs": {"value": report.value, "seconds": report.seconds},
                        "numpy": {"value": reference, "seconds": numpy_seconds},
                        "speedup": ratio,
                        "relative_difference": difference,
                        "threads": _core.get_num_threads(),
                        "files": [pred_path, label_path] if keep else None,
                    }
                )
                + "\n"
            )
            return 0
        rows = args.rows
        out.write(
            f"xent-rs score  cross_entropy = {report.value:.8f}  in {report.seconds:6.3f} s  "
            f"({_format_rate(rows / max(report.seconds, 1e-9))}, "
            f"{report.chunks} chunks, {_core.get_num_threads()} threads)\n"
            f"plain NumPy    cross_entropy = {reference:.8f}  in {numpy_seconds:6.3f} s  "
            f"({_format_rate(rows / max(numpy_seconds, 1e-9))}, everything in memory)\n"
            f"xent-rs is {ratio:.1f}x faster; the results differ by {difference:.1e} "
            "(relative; NumPy works in float32, xent-rs sums in float64)\n"
        )
        if keep:
            out.write(
                f"score it again: xent-rs score {pred_path} {label_path} --loss cross_entropy\n"
            )
        return 0
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "score":
            return _score_command(args)
        return _demo_command(args)
    except UsageError as exc:
        parser.exit(2, f"xent-rs: error: {exc}\n")
    except DataError as exc:
        sys.stderr.write(f"xent-rs: error: {_one_line(exc)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("xent-rs: interrupted\n")
        return 130
    except Exception as exc:  # never a traceback for a data problem we did not foresee
        if os.environ.get("XENT_RS_TRACEBACK"):
            raise
        sys.stderr.write(f"xent-rs: error: {type(exc).__name__}: {_one_line(exc)}\n")
        return 1
    return 0  # pragma: no cover - parser.exit does not return


if __name__ == "__main__":
    sys.exit(main())
