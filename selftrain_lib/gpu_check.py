"""The prepared GPU check (``tools/gpu_check.sh``, ``make gpu-check``): one script a lent GPU runs in
minutes, writing one JSON.

1. ``make bench``'s measurements (:func:`selftrain_lib.bench.main`) at the paper settings, 10 steps
   a setting, without the ``torch.compile`` rung (``make bench`` has it);
2. both paper presets, ``paper`` (the paper's text) and ``paper-code`` (the authors' released
   code, docs/paper_vs_code.md), on Cityscapes and VOC: 100 Stage 1 and 100 Stage 2 steps of
   DeepLabv2-ResNet-101 (random initialisation, no download) on generated data of the real sizes
   (Cityscapes 512x1024 images, VOC 500x375 images, the presets' crops), with the loss at the first
   and last step, the time per step and the peak memory;
3. the pseudo-mask pass of each, on whole images of the real size.

``reduced=True`` (``--reduced``, or ``GPU_CHECK_REDUCED=1`` for the shell script): the same code
path on the CPU at smoke size (the small network, tiny images, a few steps), which CI runs to keep
the script working. Its numbers say nothing about a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from . import bench
from .config import Config, load_config
from .runs import atomic_write_json
from .stage import resolve_device

PRESETS = ("paper", "paper-code")
# dataset -> (image size (H, W) of the generated data, classes); the crops are the presets'
REAL_SIZES = {"cityscapes": ((512, 1024), 19), "voc": ((375, 500), 21)}
REDUCED = dict(model="deeplabv2-small", widths=[8, 8, 16, 16], crop_size=[32, 32])


def check_config(dataset: str, preset: str, device: str, reduced: bool) -> Config:
    """The preset's configuration, without pre-trained weights (none is downloaded); reduced: smoke size."""
    overrides: dict[str, Any] = dict(pretrained="none", device=device)
    if reduced:
        overrides.update(REDUCED)
        if dataset == "cityscapes":  # its images are read at 512x1024 unless told otherwise
            overrides["resize"] = [48, 64]
    return load_config(dataset, preset, **overrides)


def train_steps(config: Config, classes: int, size, device: torch.device, stage: int, steps: int) -> dict[str, Any]:
    """``steps`` training steps of ``stage`` on random images of ``size``: the loss at the first and
    last step, whether every loss was finite, seconds per step and peak GPU memory."""
    n = 16
    view = bench._random_view(n, size, classes)
    pseudo = torch.randint(0, classes, (n, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    draw, step, parts = bench._step_fn(config, view, pseudo if stage >= 2 else None, classes, device, stage)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = []
    t0 = time.perf_counter()
    for s in range(steps):
        losses.append(step(draw(s), s)["loss"].detach())
    bench._sync(device)
    seconds = (time.perf_counter() - t0) / steps
    values = [float(v) for v in torch.stack(losses).cpu()]
    batch = (config.stage1_batch_size or config.batch_size) if stage == 1 else config.batch_size
    out = {"stage": stage, "steps": steps, "batch_size": batch, "crop_size": list(config.crop_size),
           "precision": parts.precision.name, "loss_first": values[0], "loss_last": values[-1],
           "losses_finite": all(math.isfinite(v) for v in values), "seconds_per_step": seconds,
           "images_per_second": batch / seconds}
    if device.type == "cuda":
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def check_preset(dataset: str, preset: str, device: torch.device, steps: int, reduced: bool) -> dict[str, Any]:
    config = check_config(dataset, preset, device.type, reduced)
    size, classes = REAL_SIZES[dataset]
    if reduced:
        size = (48, 64)
    out = {"config": {k: v for k, v in dataclasses.asdict(config).items()
                      if k in ("model", "aspp_dilations", "align_corners", "resnet_stride", "branch_init",
                               "strong_aug_input", "precision", "stage1_batch_size", "batch_size")},
           "image_size": list(size)}
    for stage in (1, 2):
        try:
            out[f"stage_{stage}"] = train_steps(config, classes, size, device, stage, steps)
        except Exception as err:  # report, go on: one failure must not hide the other measurements
            out[f"stage_{stage}"] = {"error": f"{type(err).__name__}: {err}"}
    try:
        out["pseudo_mask_pass"] = bench.pseudo_mask_pass(config, classes, device, images=2 if reduced else 20,
                                                         size=size, total=2975 if dataset == "cityscapes" else 10582)
    except Exception as err:
        out["pseudo_mask_pass"] = {"error": f"{type(err).__name__}: {err}"}
    return out


def main(out: str | os.PathLike = "build/gpu_check", steps: int | None = None, reduced: bool = False,
         bench_steps: int = 10) -> dict[str, Any]:
    """Run the check; write ``<out>/gpu_check.json`` and return its content."""
    t_start = time.perf_counter()
    device = torch.device("cpu") if reduced else resolve_device("auto")
    steps = steps or (3 if reduced else 100)
    report: dict[str, Any] = {
        "reduced": reduced, "device": str(device), "steps_per_stage": steps,
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}}
    if reduced:
        report["bench"] = {"skipped": "reduced mode (CPU): make bench runs on a GPU"}
    else:
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            # no torch.compile rung: compiling ResNet-101 twice would take a third of the 8 minutes
            bench.main(out=str(Path(out) / "bench"), steps=bench_steps, compile_model=False)
        report["bench"] = {"json": str(Path(out) / "bench" / "bench.json")}
    for dataset in REAL_SIZES:
        for preset in PRESETS:
            report[f"{dataset}/{preset}"] = check_preset(dataset, preset, device, steps, reduced)
    report["seconds"] = time.perf_counter() - t_start
    atomic_write_json(Path(out) / "gpu_check.json", report)
    return report


def _cli(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selftrain_lib.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "build/gpu_check")
    parser.add_argument("--steps", type=int, default=None, help="steps of each stage (default 100; reduced: 3)")
    parser.add_argument("--reduced", action="store_true", default=os.environ.get("GPU_CHECK_REDUCED") == "1",
                        help="CPU, smoke size (what CI runs)")
    args = parser.parse_args(argv)
    report = main(args.out, args.steps, args.reduced)
    print(f"gpu check: {Path(args.out) / 'gpu_check.json'} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli())
