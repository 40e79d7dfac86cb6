"""The command-line entry points (``python -m selftrain_lib``, ``python -m selftrain_lib.paper_figures``)
end in a few lines that say what happened and what to change (issue 24, items 10 and 12): Ctrl-C and
SIGTERM print one line (a rerun resumes) and exit 130 / 143; bad arguments of paper_figures are
argparse errors listing the valid choices; a failing notebook ends with its name, the cell's error
and the executed notebook, not papermill's traceback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selftrain_lib import paper_figures as pf

ROOT = Path(__file__).resolve().parent.parent


def _last(text: str, n: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


# ------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM
# ------------------------------------------------------------------------------------------

def _interrupting(how):
    def run_stages(config, stages, out, progress=True, keys=None):
        if how == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)   # the handler raises here
        raise KeyboardInterrupt
    return run_stages


@pytest.mark.parametrize("how,status,what", [("SIGINT", 130, "interrupted (Ctrl-C)"),
                                              ("SIGTERM", 143, "terminated (SIGTERM)")])
def test_cli_interruption_is_one_line_naming_the_run_to_resume(tmp_path, monkeypatch, capsys, how, status, what):
    import selftrain_lib.pipeline as pipeline
    from selftrain_lib.cli import main
    from selftrain_lib.pipeline import resolve_run
    from selftrain_lib.train.run_key import stage_hashes

    monkeypatch.setattr(pipeline, "run_stages", _interrupting(how))
    previous = signal.getsignal(signal.SIGTERM)
    code = main(["run", "--scale", "smoke", "--stages", "2", "--out", str(tmp_path), "--no-progress"])
    assert code == status
    first = stage_hashes(*resolve_run(scale="smoke", stages=2))[0]
    err = capsys.readouterr().err
    assert _last(err, 1) == (f"{what}: run the same command again to resume from the last checkpoint "
                             f"of {tmp_path / first}")
    assert "Traceback" not in err
    assert signal.getsignal(signal.SIGTERM) == previous   # the handler is the caller's again


def test_pretrain_interruption_does_not_promise_a_resume(tmp_path, monkeypatch, capsys):
    from selftrain_lib import pretrain
    from selftrain_lib.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain, "build_shipped", interrupted)
    assert main(["pretrain", "--into", str(tmp_path)]) == 130
    assert _last(capsys.readouterr().err, 1) == \
        "interrupted (Ctrl-C): nothing was kept; run the same command again to start over"


def test_paper_figures_interruption_names_the_run_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pf, "build", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    code = pf.main(["--out", str(tmp_path / "runs"), "--build", str(tmp_path / "b"), "--jobs", "1"])
    assert code == 130
    assert _last(capsys.readouterr().err, 1) == (
        "interrupted (Ctrl-C): run the same command again to resume from the last checkpoint "
        f"(run cache {tmp_path / 'runs'}, executed notebooks in {tmp_path / 'b'})")


@pytest.mark.slow
def test_sigterm_to_a_training_run_exits_143_and_the_rerun_resumes(tmp_path):
    """A real process, killed while Stage 1 trains: one line, exit 143, the checkpoint kept."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "selftrain_lib", "run", "--scale", "smoke", "--stages", "1", "--no-progress",
            "--out", str(tmp_path), "--set", "stage1_steps=100000", "--set", "checkpoint_every=2"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while not list(tmp_path.glob("*/checkpoint.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    (ckpt,) = tmp_path.glob("*/checkpoint.pt")
    assert _last(err, 1) == ("terminated (SIGTERM): run the same command again to resume from the last checkpoint "
                             f"of {ckpt.parent}"), err[-2000:]
    assert "Traceback" not in err and not (ckpt.parent / "error.txt").exists()


# ------------------------------------------------------------------------------------------
# paper_figures' arguments and failing notebooks
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--seeds", "a b"], '--seeds: expected non-negative integers separated by spaces or commas, such as "0 1 2", '
                         "got 'a b'"),
    (["--seeds", "0 -1"], "--seeds: expected non-negative integers"),
    (["--jobs", "x"], "--jobs: expected a positive integer or 'auto', got 'x'"),
    (["--jobs", "0"], "--jobs: expected a positive integer or 'auto', got '0'"),
    (["--only", "nope"], "only: unknown notebooks ['nope'] (choose from headline, table2, table3_4,"),
    (["--scale", "huge"], "--scale: 'huge' is not a preset (choose from cpu, paper, paper-code, quick, smoke)"),
    (["-p", "lables", "5"], "parameter 'lables': no notebook of this build declares it (did you mean 'labels'?)"),
    (["--only", "table5", "-p", "lambdas", "[0.5]"], "parameter 'lambdas': no notebook of this build declares it"),
    (["--data", "voc"], "--data: expected NAME=FOLDER, got 'voc'"),
])
def test_paper_figures_bad_arguments_are_argparse_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        pf.main([*args, "--out", str(tmp_path / "runs"), "--build", str(tmp_path / "b")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in _last(err) and _last(err, 1).startswith("python -m selftrain_lib.paper_figures: error: ")
    assert not (tmp_path / "b").exists()


def test_a_failing_notebook_ends_with_its_name_error_and_executed_notebook(tmp_path, monkeypatch, capsys):
    from papermill.exceptions import PapermillExecutionError

    executed = tmp_path / "b" / "stage2.ipynb"
    traceback = [f"frame {i}" for i in range(80)] + ["ValueError: config: lambda1=0.1 would be ignored"]
    error = PapermillExecutionError(2, 2, "ex.run_grid(...)", "ValueError", "config: lambda1=0.1 would be ignored",
                                    traceback)

    def fail(*a, **k):
        raise pf.NotebookFailed("stage2", executed, error)

    monkeypatch.setattr(pf, "build", fail)
    assert pf.main(["--out", str(tmp_path / "runs"), "--build", str(tmp_path / "b"), "--jobs", "1"]) == 1
    err = capsys.readouterr().err
    assert "frame 3" not in err   # papermill's traceback stays in the executed notebook
    last = _last(err, 3)
    assert "error: notebook stage2 failed in cell [2]: ValueError: config: lambda1=0.1 would be ignored" in last
    assert f"the executed notebook, with the full traceback: {executed}" in last
    assert "change the parameter, key or file the error names" in last


def test_execute_raises_a_summary_naming_the_cell_error(tmp_path, broken_notebook):
    notebooks = broken_notebook("labels: boom")
    with pytest.raises(pf.NotebookFailed) as err:
        pf.execute("broken", {"x": 2}, tmp_path / "build", notebook_dir=notebooks)
    summary = err.value.summary()
    assert summary.splitlines()[0] == "error: notebook broken failed in cell [3]: ValueError: labels: boom"  # [3]: after papermill's injected cell
    assert str(tmp_path / "build" / "broken.ipynb") in summary and len(summary.splitlines()) == 3
