"""Check the built documentation site: it renders, and it holds what it should.

Usage: ``python .ci/check_docs.py HTML_DIR SCREENSHOT_DIR`` (``.ci/check-docs`` runs it after
``.ci/build-docs``). Headless Chromium takes a 1280x2000 screenshot of each checked page; a
screenshot passes when enough of it differs from its background colour (text, code, plots),
and the gallery pages' also hold enough saturated colour (their plots). The HTML must have
the expected headings, an entry for every public name, and the gallery's images.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import xent_rs
import xent_rs.dask
import xent_rs.streaming

GALLERY = {  # page -> its title
    "plot_seed_training": "The seed's training loop, replayed against PyTorch",
    "plot_score_large_file": "Scoring a file bigger than memory",
    "plot_dask_cluster": "Scoring Dask arrays on a cluster",
}
HEADINGS = {  # page -> headings it must show
    "index.html": ["xent_rs"],
    "quickstart.html": ["Quick start", "A tour of the API"],
    "compatibility.html": ["Semantics and PyTorch compatibility"],
    "semantics.html": ["Semantics and decisions", "Processes, threads and signals"],
    "pipelines.html": ["Scoring in pipelines"],
    "threads.html": ["Threads, processes and dtypes"],
    "gpu.html": ["GPU"],
    "performance.html": ["Performance", "Benchmark results"],
    "api.html": ["API reference", "xent_rs", "xent_rs.streaming", "xent_rs.dask"],
    "auto_examples/index.html": ["Gallery"],
    **{f"auto_examples/{page}.html": [title] for page, title in GALLERY.items()},
}

failures: list[str] = []


def check(ok: bool, message: str) -> None:
    print(("ok    " if ok else "FAIL  ") + message, flush=True)
    if not ok:
        failures.append(message)


def headings(html: str) -> list[str]:
    found = re.findall(r"<h[1-4][^>]*>(.*?)</h[1-4]>", html, flags=re.S)
    # Without tags and permalink signs, with Sphinx's curly apostrophes made straight again.
    return [re.sub(r"<[^>]+>|¶", "", h).replace("\u2019", "'").strip() for h in found]


def image_stats(path: Path) -> tuple[float, float]:
    """(share of pixels off the background colour, share of strongly coloured pixels)."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
    flat = rgb.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[np.argmax(counts)]
    off = np.abs(flat - background).max(axis=1) > 24
    saturated = (flat.max(axis=1) - flat.min(axis=1)) > 90
    return float(off.mean()), float(saturated.mean())


def screenshot(chromium: str, page: Path, out: Path) -> None:
    out.unlink(missing_ok=True)
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=3000",
            "--window-size=1280,2000",
            f"--screenshot={out}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main(html_dir: Path, shots: Path) -> int:
    if not (html_dir / "index.html").is_file():
        sys.exit(f"check_docs: no {html_dir}/index.html: run .ci/build-docs first")

    # The HTML: headings of every page.
    for page, wanted in HEADINGS.items():
        path = html_dir / page
        found = headings(path.read_text()) if path.is_file() else []
        missing = [h for h in wanted if h not in found]
        check(not missing, f"{page}: headings {wanted}, missing {missing}")

    # Every public name has an entry in the API reference.
    html = "".join(p.read_text() for p in (html_dir / "generated").glob("*.html"))
    html += (html_dir / "api.html").read_text()
    for module in (xent_rs, xent_rs.streaming, xent_rs.dask):
        for name in module.__all__:
            obj = getattr(module, name)
            # xent_rs re-exports the accumulators, documented once, in xent_rs.streaming.
            owner = "xent_rs.streaming" if name in xent_rs.streaming.__all__ else module.__name__
            anchor = f'id="{owner}.{name}"'
            check(anchor in html, f"API entry for {module.__name__}.{name} ({anchor})")
            # The accumulators' pages list their methods, inherited ones too.
            if isinstance(obj, type) and issubclass(obj, xent_rs.streaming.Accumulator):
                method = anchor.removesuffix('"') + '.update"'
                check(method in html, f"API entry for {module.__name__}.{name}.update")

    # The gallery pages show their images, and the images are real plots.
    for page in GALLERY:
        html = (html_dir / "auto_examples" / f"{page}.html").read_text()
        images = sorted(set(re.findall(rf'src="\.\./(_images/sphx_glr_{page}_\d+\.png)"', html)))
        check(bool(images), f"{page}.html shows its plots {images}")
        for image in images:
            if not (html_dir / image).is_file():
                check(False, f"{image} exists")
                continue
            off, colour = image_stats(html_dir / image)
            check(off > 0.01 and colour > 0.001, f"{image}: not blank ({off:.1%} ink)")
    seed = (html_dir / "auto_examples/plot_seed_training.html").read_text()
    check("max loss error" in seed, "plot_seed_training.html shows the replay's errors")

    # The rendering: screenshots in headless Chromium.
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("check_docs: chromium is not installed (.ci/check-docs installs it)")
    shots.mkdir(parents=True, exist_ok=True)
    for page, plots in [("index.html", False)] + [
        (f"auto_examples/{page}.html", True) for page in GALLERY
    ]:
        out = shots / (Path(page).stem + ".png")
        screenshot(chromium, html_dir / page, out)
        width, height = Image.open(out).size
        off, colour = image_stats(out)
        enough = off > 0.01 and (colour > 0.002 if plots else True)
        check(
            (width, height) == (1280, 2000) and enough,
            f"screenshot {out} ({width}x{height}): {off:.1%} ink, {colour:.2%} colour",
        )

    if failures:
        print(f"check_docs: {len(failures)} check(s) failed")
        return 1
    print("check_docs: the site renders and holds what it should")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
