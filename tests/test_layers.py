"""A call flows down the layers once: public function, spec, backend, core, and back.

Traced with ``sys.setprofile`` over the modules of ``xent_rs``: each call and return that moves
from one module to another. The layers, top to bottom:

0. the front ends: ``_functional`` (the public functions), ``streaming``;
1. ``_spec``: the call's checked options;
2. ``_backend``: the backend choice, the conversions, the result's dtype;
3. the cores: ``_core`` (Rust, NumPy arrays) and ``_cupy`` (CUDA, CuPy arrays).

A *climb* is a call from a module into a higher layer; a *return* is control coming back to a
module the call had left. Each public call makes no climb and at most four returns (in
practice: the spec back to the function, the core back to the backend, the backend back to
the function).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import numpy as np
import pytest

import xent_rs
from xent_rs import streaming

LAYER = {
    "xent_rs._functional": 0,
    "xent_rs.streaming": 0,
    "xent_rs._spec": 1,
    "xent_rs._backend": 2,
    "xent_rs._core": 3,
    "xent_rs._cupy": 3,
}


def _module(frame: FrameType | None) -> str | None:
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if name in LAYER:
            return str(name)
        frame = frame.f_back
    return None


def trace(call: Callable[[], Any]) -> list[tuple[str, str]]:
    """Where control passes among the modules of ``xent_rs``: ``(event, module)`` for each
    call into another module and each return into another module."""
    path: list[tuple[str, str]] = []
    current: list[str | None] = [None]

    def visit(event: str, module: str | None) -> None:
        if module is not None and module != current[0]:
            path.append((event, module))
            current[0] = module

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            visit("call", _module(frame))
        elif event == "return":
            visit("return", _module(frame.f_back))
        elif event == "c_call" and getattr(arg, "__module__", None) in LAYER:
            visit("call", arg.__module__)
        elif event == "c_return" and getattr(arg, "__module__", None) in LAYER:
            visit("return", _module(frame))

    frame = sys._getframe()
    current[0] = _module(frame)
    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return path


def climbs_and_returns(start: str, path: list[tuple[str, str]]) -> tuple[int, int]:
    """Calls into a higher layer, and returns into a module already left."""
    climbs, returns, here = 0, 0, start
    for event, module in path:
        if event == "call" and LAYER[module] < LAYER[here]:
            climbs += 1
        if event == "return":
            returns += 1
        here = module
    return climbs, returns


rng = np.random.default_rng(0)
X = rng.normal(size=(8, 5)).astype(np.float32)
T = rng.integers(0, 5, size=8)
W = rng.uniform(0.5, 2.0, size=5)
P = rng.uniform(0.1, 0.9, size=(8, 5))

CE_ACC = streaming.CrossEntropyAccumulator(weight=W)
BCE_ACC = streaming.BinaryCrossEntropyWithLogitsAccumulator(weight=W)

CE_ACC = streaming.CrossEntropyAccumulator(weight=W)
BCE_ACC = streaming.BinaryCrossEntropyWithLogitsAccumulator(weight=W)

CALLS: dict[str, Callable[[], Any]] = {
    "cross_entropy": lambda: xent_rs.cross_entropy(X, T, return_grad=True),
    "cross_entropy weighted float16": lambda: xent_rs.cross_entropy(
        X.astype(np.float16), T.astype(np.int32), weight=W, label_smoothing=0.1, return_grad=True
    ),
    "cross_entropy soft strided": lambda: xent_rs.cross_entropy(X.T, P.T, axis=0, reduction="none"),
    "nll_loss": lambda: xent_rs.nll_loss(X, T, weight=W, reduction="sum", return_grad=True),
    "binary_cross_entropy": lambda: xent_rs.binary_cross_entropy(P, P > 0.5, weight=W),
    "binary_cross_entropy_with_logits": lambda: xent_rs.binary_cross_entropy_with_logits(
        X, P, pos_weight=W.astype(np.float32), return_grad=True
    ),
    "log_softmax": lambda: xent_rs.log_softmax(X, axis=0),
    "softmax out": lambda: xent_rs.softmax(X, out=np.empty_like(X)),
    "logsumexp": lambda: xent_rs.logsumexp(X, keepdims=True),
    "log_softmax_backward": lambda: xent_rs.log_softmax_backward(X, X),
    "accumulator update": lambda: CE_ACC.update(X, T, return_losses=True),
    "binary accumulator update": lambda: BCE_ACC.update(X, P, sample_weight=W[:1].repeat(8)),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_call_flows_down_once(name: str) -> None:
    CALLS[name]()  # warm: first-use imports and caches are not the call's flow
    path = trace(CALLS[name])
    entry = path[0][1]
    assert ("call", "xent_rs._core") in path, path
    climbs, returns = climbs_and_returns(entry, path[1:])
    assert climbs <= 1 and returns <= 4, (climbs, returns, path)


def test_the_trace_sees_a_climb() -> None:
    """The counting itself: a detour back up is a climb, and its way back a return."""
    path = [("call", "xent_rs._backend"), ("call", "xent_rs._spec"), ("return", "xent_rs._backend")]
    assert climbs_and_returns("xent_rs._functional", path) == (1, 1)
    path.append(("return", "xent_rs._functional"))
    assert climbs_and_returns("xent_rs._functional", path) == (1, 2)
