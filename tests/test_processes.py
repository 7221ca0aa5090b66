"""Processes and signals: forked children, other start methods, and Ctrl-C during long calls.

Every scenario runs in a subprocess of its own with a timeout, so that a regression (a child
waiting forever on its parent's pool threads, a call that ignores Ctrl-C) fails the test
instead of hanging the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import xent_rs

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork and signals: Linux")

TIMEOUT = 60

#: Shared by the scenarios: data large enough for every call to run on the pool, and the
#: results the parent computes before it starts any child.
PRELUDE = """
import multiprocessing as mp
import os
import sys
import threading

import numpy as np

import xent_rs

rng = np.random.default_rng(0)
x = rng.standard_normal((200_000, 10), dtype=np.float32)
t = rng.integers(0, 10, 200_000)
w = rng.uniform(0.5, 2.0, 10).astype(np.float32)


def compute(_=None):
    loss, grad = xent_rs.cross_entropy(x, t, weight=w, label_smoothing=0.1, return_grad=True)
    big = xent_rs.log_softmax(x)  # a cached-size output (8 MB)
    return float(loss), grad.tobytes(), float(big.sum(dtype=np.float64))
"""


def run_script(source: str, *, threads: int) -> str:
    """Runs ``source`` as a script file (``spawn`` and ``forkserver`` children import the
    main module from its file) in a fresh interpreter with ``threads`` worker threads; returns
    its stdout. The script must print ``ok`` last."""
    env = dict(os.environ, XENT_RS_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as directory:
        script = Path(directory) / "scenario.py"
        script.write_text(source)
        proc = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok"), (proc.stdout, proc.stderr)
    return proc.stdout


def run_scenario(body: str, *, threads: int = 2) -> str:
    """:func:`run_script` of PRELUDE + ``body``."""
    return run_script(PRELUDE + textwrap.dedent(body), threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_fork_pool_after_a_parallel_call(threads: int) -> None:
    run_scenario(
        """
        want = compute()
        with mp.get_context("fork").Pool(2) as pool:
            got = pool.map(compute, range(4))
        assert all(g == want for g in got)
        assert compute() == want  # the parent's pool still works
        print("ok")
        """,
        threads=threads,
    )


def test_os_fork_after_a_call() -> None:
    run_scenario(
        """
        want = compute()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            ok = compute() == want and xent_rs.get_num_threads() == 2
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
        os.close(write)
        answer = os.read(read, 1)
        _, status = os.waitpid(pid, 0)
        assert status == 0 and answer == b"1", (status, answer)
        print("ok")
        """
    )


def test_fork_after_a_call_from_another_thread() -> None:
    run_scenario(
        """
        results = []
        worker = threading.Thread(target=lambda: results.append(compute()))
        worker.start()
        worker.join()
        with mp.get_context("fork").Pool(2) as pool:
            got = pool.map(compute, range(2))
        assert got == results * 2
        print("ok")
        """
    )


def test_fork_while_other_threads_call() -> None:
    """Forks while other threads are inside parallel calls and freeing cached outputs: the
    locks those threads hold at the moment of a fork must not stay locked in the child."""
    run_scenario(
        """
        want = compute()
        stop = threading.Event()

        def busy():
            while not stop.is_set():
                compute()

        threads = [threading.Thread(target=busy) for _ in range(2)]
        for th in threads:
            th.start()
        try:
            for _ in range(10):
                pid = os.fork()
                if pid == 0:
                    os._exit(0 if compute() == want else 1)
                _, status = os.waitpid(pid, 0)
                assert status == 0, status
        finally:
            stop.set()
            for th in threads:
                th.join()
        print("ok")
        """
    )


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_other_start_methods(method: str) -> None:
    run_scenario(
        f"""
        if __name__ == "__main__":
            want = compute()
            with mp.get_context({method!r}).Pool(2) as pool:
                got = pool.map(compute, range(2))
            assert got == [want, want]
            print("ok")
        """
    )


def test_set_num_threads_in_a_forked_child() -> None:
    run_scenario(
        """
        want = compute()
        pid = os.fork()
        if pid == 0:
            xent_rs.set_num_threads(3)
            os._exit(0 if compute() == want else 1)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        print("ok")
        """
    )


# --------------------------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------------------------

#: A call that takes about a second or more here: the rows grow until it does.
INTERRUPT_PRELUDE = """
import os
import signal
import threading
import time

import numpy as np

import xent_rs


def long_call_args():
    rows = 1 << 22
    while True:
        x = np.random.default_rng(0).standard_normal((rows, 8))
        t = np.random.default_rng(1).integers(0, 8, rows)
        start = time.perf_counter()
        want = xent_rs.cross_entropy(x, t, label_smoothing=0.1, return_grad=True)
        took = time.perf_counter() - start
        if took > 1.0 or rows >= 1 << 26:
            return x, t, want, took
        rows *= 2


def interrupt_after(seconds, signum=signal.SIGINT):
    sent = []

    def send():
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signum)

    threading.Timer(seconds, send).start()
    return sent


# runs call with a SIGINT after 0.1 s: it must stop within limit s and before took s
def interrupted(call, took, limit):
    sent = interrupt_after(0.1)
    start = time.perf_counter()
    try:
        call()
    except KeyboardInterrupt:
        stopped = time.perf_counter()
    else:
        raise AssertionError("the call ran to its end")
    latency = stopped - sent[0]
    assert latency < limit and stopped - start < took, (latency, took)
    return latency
"""


def run_interrupt(body: str, *, threads: int) -> str:
    """:func:`run_script` of INTERRUPT_PRELUDE + ``body``."""
    return run_script(INTERRUPT_PRELUDE + textwrap.dedent(body), threads=threads)


#: Seconds between the signal and the exception that we accept on a loaded CI machine (the
#: design target is about 0.1 s: a 40 ms poll plus one block).
LATENCY = 0.5


@pytest.mark.parametrize("threads", [1, 2])
def test_ctrl_c_stops_a_long_call_and_the_next_call_works(threads: int) -> None:
    run_interrupt(
        f"""
        x, t, want, took = long_call_args()
        call = lambda: xent_rs.cross_entropy(x, t, label_smoothing=0.1, return_grad=True)
        latency = interrupted(call, took, {LATENCY})
        again = xent_rs.cross_entropy(x, t, label_smoothing=0.1, return_grad=True)
        assert again[0] == want[0] and np.array_equal(again[1], want[1])
        print("latency", latency)
        print("ok")
        """,
        threads=threads,
    )


def test_the_handlers_exception_is_raised_and_a_quiet_handler_lets_the_call_finish() -> None:
    run_interrupt(
        f"""
        class Stop(Exception):
            pass

        def raising(signum, frame):
            raise Stop("from the handler")

        x, t, want, took = long_call_args()
        signal.signal(signal.SIGUSR1, raising)
        sent = interrupt_after(0.1, signal.SIGUSR1)
        try:
            xent_rs.cross_entropy(x, t, label_smoothing=0.1, return_grad=True)
        except Stop as e:
            assert str(e) == "from the handler"
            assert time.perf_counter() - sent[0] < {LATENCY}
        else:
            raise AssertionError("the call ran to its end")

        seen = []
        signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
        interrupt_after(0.1, signal.SIGUSR1)
        got = xent_rs.cross_entropy(x, t, label_smoothing=0.1, return_grad=True)
        assert seen == [signal.SIGUSR1]
        assert got[0] == want[0] and np.array_equal(got[1], want[1])
        print("ok")
        """,
        threads=2,
    )


def test_ctrl_c_stops_one_huge_row_and_a_callers_buffer_is_usable_after() -> None:
    """One row of 2**29 values (half a second or more of one thread's work) stops midway."""
    run_interrupt(
        f"""
        block = np.random.default_rng(0).standard_normal(1 << 20, dtype=np.float32)
        row = np.tile(block, 1 << 9).reshape(1, -1)
        out = np.empty_like(row)
        xent_rs.log_softmax(row, out=out)
        want = out[:, ::997].copy()
        start = time.perf_counter()
        xent_rs.log_softmax(row, out=out)
        took = time.perf_counter() - start
        interrupted(lambda: xent_rs.log_softmax(row, out=out), took, {LATENCY})
        xent_rs.log_softmax(row, out=out)
        assert np.array_equal(out[:, ::997], want)
        print("ok")
        """,
        threads=2,
    )


def test_cli_score_stopped_by_ctrl_c_exits_130_with_one_line(tmp_path: Path) -> None:
    """A real SIGINT lands 10 ms into the first chunk, a single native call of 2**26 values
    (which stops midway: the call takes 50 ms on a fast core, so a later signal could miss
    it); the command exits with 130 and one line, no traceback."""
    rows = 1 << 22
    x = np.random.default_rng(0).standard_normal((rows, 16))
    np.save(tmp_path / "pred.npy", x)
    np.save(tmp_path / "target.npy", np.arange(rows) % 16)
    del x
    wrapper = textwrap.dedent(
        f"""
        import os, signal, sys, threading
        from xent_rs import cli, streaming

        update = streaming.CrossEntropyAccumulator.update

        def first_update_interrupted(self, *args, **kwargs):
            threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
            return update(self, *args, **kwargs)

        streaming.CrossEntropyAccumulator.update = first_update_interrupted
        sys.exit(cli.main(["score", "pred.npy", "target.npy", "--loss", "cross_entropy",
                           "--label-smoothing", "0.1", "--chunk-rows", "{rows}"]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", wrapper],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 130, (proc.stdout, proc.stderr)
    assert proc.stderr == "xent-rs: interrupted\n"
    assert proc.stdout == ""


def test_calls_from_other_threads_are_not_stopped_by_the_main_threads_signal() -> None:
    """Python runs signal handlers on the main thread only: a long call made by another
    thread runs to its end (and so keeps its result), as any Python code there would."""
    run_interrupt(
        """
        x, t, want, took = long_call_args()
        got = []
        worker = threading.Thread(
            target=lambda: got.append(
                xent_rs.cross_entropy(x, t, label_smoothing=0.1, return_grad=True)
            )
        )
        worker.start()
        interrupt_after(0.1)
        # Not in join(): CPython 3.11's Thread.join interrupted by KeyboardInterrupt can
        # return early forever after.
        try:
            time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("no KeyboardInterrupt in the main thread")
        worker.join()
        assert got and got[0][0] == want[0] and np.array_equal(got[0][1], want[1])
        print("ok")
        """,
        threads=2,
    )


def test_short_calls_keep_their_results_under_a_pending_signal() -> None:
    """A call too short to be watched is never stopped: the signal is raised after it."""
    x = np.random.default_rng(0).standard_normal((1000, 10))
    t = np.arange(1000) % 10
    want = xent_rs.cross_entropy(x, t)
    caught = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: caught.append(signum))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        got = xent_rs.cross_entropy(x, t)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert got == want
    assert caught == [signal.SIGUSR1]
