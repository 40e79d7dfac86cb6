"""``make bench``: training throughput, peak memory and pseudo-mask time; writes and prints JSON.

Measures, on this machine's CPU at the ``quick`` scale (synth-street): Stage-2 training
throughput (images/s), peak resident memory, and the time of one pseudo-mask pass over the
pool. With a GPU present, also DeepLabv2-ResNet-101 at the paper's PASCAL setting (321x321,
batch 10 = 1 labelled + 9 from L∪U) on random data.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import resource
import time
from pathlib import Path

import torch

from .config import load_config
from .data import TrainingView, load_data, make_split, training_view
from .ema import ema_decay
from .evaluate import predict
from .runs import atomic_write_json
from .stage import build_stage_parts, resolve_device, train_step


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def time_stage_steps(config, view: TrainingView, pseudo, num_classes: int, device, steps: int, warmup: int = 3,
                     stage: int = 2) -> dict:
    """Images per second of ``steps`` training steps of ``stage`` after ``warmup`` steps."""
    parts = build_stage_parts(config, stage, view, pseudo, num_classes, device)
    parts.model.train()

    def one(step):
        decay = ema_decay(step, parts.steps, config.ema_decays, config.ema_milestones)
        return train_step(parts.model, parts.teacher, parts.optimizer, parts.batches(step), parts.batches.strong,
                          parts.weights, view.ignore_index, decay, parts.method, parts.precision, parts.scaler)

    for s in range(warmup):
        one(s)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for s in range(warmup, warmup + steps):
        loss = one(s)["loss"]
    float(loss.detach())  # one sync at the end
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = {"steps": steps, "batch_size": config.batch_size, "labelled_per_batch": config.labelled_per_batch,
           "crop_size": list(config.crop_size), "precision": parts.precision.name, "seconds_per_step": dt / steps,
           "images_per_second": steps * config.batch_size / dt}
    if device.type == "cuda":
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def bench_cpu_quick(steps: int) -> dict:
    config = load_config("synth-street", "quick", device="cpu")
    data = load_data(config)
    view = training_view(data, make_split(data.pool_size, config.labels, config.seed))
    pseudo = data.train_masks.clone()  # stands in for stage-1 pseudo-masks: only the timing matters here
    device = torch.device("cpu")
    rss0 = _peak_rss_mb()
    res = time_stage_steps(config, view, pseudo, data.info.num_classes, device, steps)
    res["peak_rss_mb"] = _peak_rss_mb()
    res["peak_rss_mb_before"] = rss0
    net = build_stage_parts(config, 1, view, None, data.info.num_classes, device).model.segmenter
    t0 = time.perf_counter()
    predict(net, data.train_images, config.eval_batch_size, device)
    res["pseudo_mask_pass_seconds"] = time.perf_counter() - t0
    res["pseudo_mask_pass_images"] = data.pool_size
    return res


def bench_gpu_paper(steps: int) -> dict:
    """DeepLabv2-R101, 321x321, batch 10 (1 labelled + 9 from L∪U), random images, no pre-training download."""
    device = resolve_device("cuda")
    n, h, w, c = 200, 321, 321, 21
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, c, (n, h, w), dtype=torch.uint8, generator=g)
    split = make_split(n, 10, 0)
    view = TrainingView(images=images, labelled=split.labelled, labelled_masks=masks[split.labelled])
    config = load_config("synth-objects", "paper", pretrained="none", device="cuda")
    # The paper's 321x321 crop is larger than the synthetic images the YAML validates against;
    # the random images here are 321x321, so replace() (which skips validation) is right.
    config = dataclasses.replace(config, crop_size=(h, w))
    return time_stage_steps(config, view, masks, c, device, steps)


def main(out: str = "build/bench", steps: int = 30) -> int:
    torch.set_num_threads(torch.get_num_threads())
    report = {"machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                          "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
              "cpu_quick_stage2": bench_cpu_quick(steps)}
    if torch.cuda.is_available():
        report["gpu_r101_voc_stage2"] = bench_gpu_paper(steps)
    path = atomic_write_json(Path(out) / "bench.json", report)
    print(json.dumps(report, indent=2))
    print(f"written to {path}")
    return 0
