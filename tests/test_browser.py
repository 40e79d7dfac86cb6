"""A real browser: JupyterLab on a free port, ``notebooks/explore.ipynb`` at smoke scale, Run All
through Playwright driving the system chromium; the explorer must show an image and redraw it when
the stage changes, and follow its controls (worst first, opacity, a compared run). Skipped (with the reason) without chromium or the ``playwright`` package.

The notebook is a copy whose parameters cell is set to smoke scale; the run cache is made by the
test in a temporary folder and reaches the kernel through ``SELFTRAIN_RUNS`` (selftrain_lib.paths).
A screenshot goes to ``build/explorer.png``."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from selftrain_lib import experiments as ex

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install "
                                                              "playwright; no `playwright install`: the system chromium is used)")

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# smoke scale for the test; SELFTRAIN_BROWSER_SCALE=quick retakes the README's screenshot on trained models
SCALE = os.environ.get("SELFTRAIN_BROWSER_SCALE", "smoke")
PARAMS = {"dataset": '"synth-objects"', "labels": "60", "scale": f'"{SCALE}"'}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium; .ci/run does)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smoke_copy(folder: Path) -> Path:
    """explore.ipynb with its parameters set to smoke scale, on the kernel of this interpreter."""
    nb = nbformat.read(ROOT / "notebooks" / "explore.ipynb", as_version=4)
    lines = []
    for line in nb.cells[1].source.splitlines():
        name = line.split(":", 1)[0].split("=", 1)[0].strip()
        if name in PARAMS:
            annotation, _, comment = line.partition("#")
            line = f"{annotation.split('=', 1)[0].rstrip()} = {PARAMS[name]}  #{comment}"
        lines.append(line)
    nb.cells[1].source = "\n".join(lines)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "explore.ipynb"
    nbformat.write(nb, path)
    return path


# the image list's IoUs ascend (worst first); entries with no IoU ("IoU –") left out; ipywidgets
# writes option labels with no-break spaces
ASCENDING = """s => { const v = [...s.options].map(o => o.text.replace(/\\u00a0/g, ' ')).filter(t => !t.includes('IoU –'))
                             .map(t => parseFloat(t.split('IoU ')[1]));
                   return v.length > 1 && v.every((x, i) => i === 0 || v[i - 1] <= x); }"""


def _control(page, kind: str, label: str):
    """The ipywidgets control of class ``kind`` (``widget-dropdown``, ``widget-slider``) whose
    description is ``label``."""
    return page.locator(f".{kind}", has=page.locator("label", has_text=label))


def _redrawn(page, img, src: str) -> str:
    """Wait until the explorer's image is redrawn (its ``src`` differs from ``src``); the new one."""
    page.wait_for_function("([img, src]) => img.getAttribute('src') !== src && img.naturalWidth > 100",
                           arg=[img, src], timeout=60_000)
    return img.get_attribute("src")


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a smoke-scale copy of explore.ipynb, with a run cache already filled."""
    runs = tmp_path / "runs"
    # the notebook's run, and the mt-cutmix baseline of the same labels and seed to compare it with
    ex.run_grid([ex.spec("synth-objects", 60, 0), ex.baseline_spec("synth-objects", 60, "mt-cutmix", 0)], SCALE,
                str(runs), progress=False)
    nb_dir = tmp_path / "nb"
    nb_dir.mkdir()
    _smoke_copy(nb_dir)
    settings = tmp_path / "lab-settings"
    # every cell in the page (no virtual scrolling), and no news pop-up over the outputs
    for plugin, values in {"notebook-extension/tracker": '{"windowingMode": "none"}',
                           "apputils-extension/notification": '{"fetchNews": "false"}'}.items():
        folder, name = plugin.split("/")
        path = settings / "@jupyterlab" / folder / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(values)
    port, token = _free_port(), "selftrain-test-token"
    env = {**os.environ, "SELFTRAIN_RUNS": str(runs), "SELFTRAIN_FIGURES": str(tmp_path / "figures"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings)}
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={nb_dir}",
                             "--ServerApp.open_browser=False", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
                             "jupyterlab.NeverCheckForUpdate"] + (["--allow-root"] if os.geteuid() == 0 else []),
                            cwd=nb_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"jupyter lab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            raise RuntimeError(f"jupyter lab did not answer on {url}: {(tmp_path / 'lab.log').read_text()[-2000:]}")
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_explorer_in_jupyterlab_draws_redraws_and_follows_its_controls(lab):
    url, token = lab
    shot = ROOT / "build" / "explorer.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/explore.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            try:  # JupyterLab may ask which kernel to start: accept its proposal (this interpreter's python3)
                page.click(".jp-Dialog button.jp-mod-accept", timeout=10_000)
            except sync_api.TimeoutError:
                pass
            # the kernel must be idle before Run All
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
            page.click(".lm-MenuBar-itemLabel:text-is('Run')")
            page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
            img = page.wait_for_selector("img.widget-image", state="attached", timeout=float(os.environ.get("SELFTRAIN_BROWSER_TIMEOUT_S", 240)) * 1000)
            img.scroll_into_view_if_needed()
            page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=img, timeout=60_000)
            first = img.get_attribute("src")
            stage = page.locator(".widget-dropdown", has=page.locator("label", has_text="stage")).locator("select")
            assert stage.input_value() != ""                      # a stage is selected after Run All
            # ipywidgets writes option labels with no-break spaces
            options = [o.replace("\xa0", " ") for o in stage.locator("option").all_inner_texts()]
            assert options == ["Stage 1", "Stage 2", "Stage 3"]
            assert stage.evaluate("s => s.selectedIndex") == 2            # the run's last stage
            status = page.locator(".widget-html", has_text="val mIoU")
            assert status.inner_text().startswith("runs/")              # relative to the cache
            stage.select_option(index=0)                                  # Stage 1
            first = _redrawn(page, img, first)
            # worst first: the image list reorders by IoU, ascending, and its worst image is drawn
            images = _control(page, "widget-dropdown", "image").locator("select")
            page.click(".widget-toggle-buttons button:text-is('worst first')")
            page.wait_for_function(ASCENDING, arg=images.element_handle(), timeout=60_000)
            if not images.evaluate("s => s.options[s.selectedIndex].text").startswith("#0"):
                first = _redrawn(page, img, first)                       # image 0 was not the worst
            choices = [o.replace("\xa0", " ") for o in images.locator("option").all_inner_texts()]
            ious = [float(c.split("IoU ")[1].split("%")[0]) for c in choices if "IoU –" not in c]
            assert ious == sorted(ious) and images.evaluate("s => s.selectedIndex") == 0
            assert any(c.endswith(" · labelled") for c in choices) and any(c.endswith(" · unlabelled") for c in choices)
            # opacity: the slider's handle dragged past the right end of its track (1)
            slider = _control(page, "widget-slider", "opacity")
            slider.scroll_into_view_if_needed()
            handle, track = slider.locator(".noUi-handle").bounding_box(), slider.locator(".noUi-target").bounding_box()
            page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
            page.mouse.down()
            page.mouse.move(track["x"] + track["width"] + 30, handle["y"] + handle["height"] / 2, steps=8)
            page.mouse.up()
            first = _redrawn(page, img, first)
            readout = slider.locator(".widget-readout")
            assert readout.inner_text().strip() == "1.00"
            # a second run beside the first: the baseline is offered first
            compare = _control(page, "widget-dropdown", "compare").locator("select")
            assert "mt-cutmix" in compare.locator("option").all_inner_texts()[1]
            compare.select_option(index=1)
            _redrawn(page, img, first)
            for _ in range(200):  # the status line follows the picture (one redraw): wait for it too
                if "compared: " in status.inner_text():
                    break
                page.wait_for_timeout(100)
            status = status.inner_text()
            assert "compared: runs/" in status and str(ROOT) not in status and "/tmp" not in status
            img.scroll_into_view_if_needed()
            page.screenshot(path=str(shot), full_page=False)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        except Exception:
            # what the page showed: a screenshot and the notebook's outputs, for the failure report
            page.screenshot(path=str(shot.with_name("explorer_failure.png")), full_page=True)
            outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
            raise AssertionError(f"explorer page: screenshot {shot.with_name('explorer_failure.png')}; "
                                 f"outputs: {outputs}")
        finally:
            browser.close()
