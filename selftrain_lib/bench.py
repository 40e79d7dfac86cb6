"""``make bench``: training throughput, where a step's time goes, memory, FLOPs utilisation and
the pseudo-mask pass; writes ``bench.json`` and prints it.

Always, on this machine's CPU at the ``quick`` scale (synth-street): Stage-1 and Stage-2 steps of
the small model. With a GPU: DeepLabv2-ResNet-101 at the paper's settings (docs/method.md) on random
data of the real sizes, no download:

- PASCAL VOC: 321x321 crops, batch 10 = 1 labelled + 9 from L∪U;
- Cityscapes: 256x512 crops, batch 5 = 1 + 4;

each as a ladder of optimisations, every rung measured in the same run against the plain fp32
step (NCHW, no cuDNN autotuning): + channels-last and cuDNN autotuning, + bf16 autocast (fp16
with a grad scaler where bf16 is missing), + ``torch.compile`` of the network. Per setting:
images/s of Stage-1 and Stage-2/3 steps, peak GPU memory, the share of step time spent drawing
the batch (sampling, weak and strong augmentation on the device), FLOPs per step and the model
FLOPs utilisation against the GPU's peak, and the pseudo-mask pass over VOC's 10,582 images
(measured on a sample of whole 500x375 images, extrapolated).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import Config, load_config
from .data import ArrayDataset, TrainingView, load_data, make_split, training_view
from .evaluate import predictions
from .runs import atomic_write_json
from .stage import resolve_device, train_step
from .train.parts import build_stage_parts

# dense bf16/fp16 tensor-core peak (FLOP/s) by GPU name fragment, from the vendors' data sheets
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "V100": 125e12,
              "RTX 4090": 165e12}
VOC_TRAIN_IMAGES = 10582


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def peak_flops(device: torch.device) -> float | None:
    """The GPU's dense bf16 peak from :data:`PEAK_FLOPS`, or None (CPU, unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_fn(config: Config, view, pseudo, num_classes: int, device, stage: int, compile_model: bool = False,
             channels_last: bool = True) -> tuple[Callable, Callable, Any]:
    """(draw(step) -> batch, step(batch, step) -> losses, parts) of one stage's training step."""
    parts = build_stage_parts(config, stage, view, pseudo, num_classes, device)
    if not channels_last:
        parts.model.to(memory_format=torch.contiguous_format)
    parts.model.train()
    trained = torch.compile(parts.model) if compile_model else parts.model

    def step(batch, s):
        return train_step(trained, parts.teacher, parts.optimizer, batch, parts.method, view.ignore_index,
                          parts.ema_decay(s), parts.precision, parts.scaler)

    return parts.batches, step, parts


def count_flops(draw: Callable, step: Callable, s: int = 0) -> float:
    """FLOPs of one training step (forward, backward, the teacher's forward), by torch's counter."""
    batch = draw(s)
    with FlopCounterMode(display=False) as counter:
        step(batch, s)
    return float(counter.get_total_flops())


def time_steps(config: Config, view, pseudo, num_classes: int, device, steps: int, stage: int = 2, warmup: int = 3,
               compile_model: bool = False, channels_last: bool = True, flops: bool = False) -> dict[str, Any]:
    """Throughput of ``steps`` steps of ``stage`` after ``warmup``, and where the time goes.

    Two passes: end to end without host synchronisation (images/s, as training runs), then step
    by step with a synchronisation after drawing the batch and after the step (the share of time
    in drawing: sampling, loading and augmentation)."""
    draw, step, parts = _step_fn(config, view, pseudo, num_classes, device, stage, compile_model, channels_last)
    for s in range(warmup):
        step(draw(s), s)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for s in range(warmup, warmup + steps):
        loss = step(draw(s), s)["loss"]
    float(loss.detach())  # one host sync, at the end
    _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    t_draw = t_step = 0.0
    for s in range(warmup + steps, warmup + 2 * steps):
        t0 = time.perf_counter()
        batch = draw(s)
        _sync(device)
        t1 = time.perf_counter()
        step(batch, s)
        _sync(device)
        t_draw, t_step = t_draw + t1 - t0, t_step + time.perf_counter() - t1
    out = {"stage": stage, "steps": steps, "batch_size": config.batch_size,
           "labelled_per_batch": config.labelled_per_batch if stage >= 2 else config.batch_size,
           "crop_size": list(config.crop_size), "precision": parts.precision.name,
           "channels_last": channels_last and device.type == "cuda",
           "compiled": compile_model, "seconds_per_step": seconds, "images_per_second": config.batch_size / seconds,
           "draw_share": t_draw / (t_draw + t_step)}
    if device.type == "cuda":
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if flops:
        out["flops_per_step"] = count_flops(draw, step, warmup + 2 * steps)
        peak = peak_flops(device)
        out["mfu"] = out["flops_per_step"] / seconds / peak if peak else None
    return out


def optimisation_ladder(config: Config, view, pseudo, num_classes: int, device, steps: int, stage: int = 2,
                        compile_model: bool = True) -> dict[str, Any]:
    """Each optimisation added in turn, timed in this run, with its speed-up over the plain fp32 step.

    On the CPU only the plain step runs (the others are GPU features)."""
    rungs = [("fp32 plain", dict(precision="fp32"), dict(channels_last=False), False)]
    if device.type == "cuda":
        rungs += [("+ channels-last, cuDNN autotune", dict(precision="fp32"), {}, True),
                  ("+ bf16 autocast", dict(precision="auto"), {}, True)]
        if compile_model:
            rungs.append(("+ torch.compile", dict(precision="auto"), dict(compile_model=True), True))
    results = {}
    for name, overrides, kwargs, autotune in rungs:
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = autotune
        cfg = dataclasses.replace(config, **overrides)
        try:
            results[name] = time_steps(cfg, view, pseudo, num_classes, device, steps, stage, flops=(name == rungs[-1][0]),
                                       **kwargs)
        except Exception as err:  # e.g. torch.compile without a working compiler: report, go on
            results[name] = {"error": f"{type(err).__name__}: {err}"}
    base = results["fp32 plain"].get("seconds_per_step")
    for r in results.values():
        if base and "seconds_per_step" in r:
            r["speedup_vs_fp32_plain"] = base / r["seconds_per_step"]
    return results


def _predict(net, images: torch.Tensor, batch_size: int, device) -> None:
    """The pseudo-mask pass's work on uint8 ``images`` (N, 3, H, W): argmax, moved to the CPU."""
    for _, pred in predictions(net, ArrayDataset(images, None, ()), range(images.shape[0]), batch_size, device):
        pred.to(torch.uint8).cpu()


def pseudo_mask_pass(config: Config, num_classes: int, device, images: int, size=(375, 500),
                     total: int = VOC_TRAIN_IMAGES) -> dict[str, Any]:
    """Seconds of the pseudo-mask pass (whole images, one by one, as for VOC's varying sizes) on
    ``images`` random images of ``size``, and that rate extrapolated to ``total`` images."""
    parts = build_stage_parts(config, 1, _random_view(4, size, num_classes), None, num_classes, device)
    net = parts.model.segmenter
    data = torch.randint(0, 256, (images, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with parts.precision.autocast() if parts.precision is not None else contextlib.nullcontext():
        _predict(net, data[:2], 1, device)  # warm-up (cuDNN autotuning)
        _sync(device)
        t0 = time.perf_counter()
        _predict(net, data, 1, device)
        _sync(device)
    seconds = time.perf_counter() - t0
    return {"images": images, "image_size": list(size), "seconds": seconds,
            f"seconds_for_{total}_images": seconds / images * total}


def _random_view(n: int, size, num_classes: int) -> TrainingView:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, num_classes, (n, *size), dtype=torch.uint8, generator=g)
    split = make_split(n, max(1, n // 4), 0)
    return TrainingView(images=images, labelled=split.labelled, labelled_masks=masks[split.labelled])


PAPER_SETTINGS = {  # dataset -> (crop (H, W), batch, labelled per batch, classes); docs/method.md
    "voc": ((321, 321), 10, 1, 21),
    "cityscapes": ((256, 512), 5, 1, 19),
}


def paper_config(dataset: str, device: str = "cuda", **overrides) -> tuple[Config, TrainingView, torch.Tensor, int]:
    """DeepLabv2-R101 at the paper's setting for ``dataset``, on 64 random images a little larger
    than the crop (so that random crops move), without pre-trained weights."""
    (h, w), batch, labelled, classes = PAPER_SETTINGS[dataset]
    view = _random_view(64, (h + 16, w + 16), classes)
    pseudo = torch.randint(0, classes, (64, h + 16, w + 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    config = load_config("synth-objects", "paper", pretrained="none", device=device)
    # the crops are larger than the synthetic images the YAML validates against, hence replace()
    config = dataclasses.replace(config, crop_size=(h, w), batch_size=batch, labelled_per_batch=labelled,
                                 scale_range=(1.0, 1.0), **overrides)
    return config, view, pseudo, classes


def bench_paper(dataset: str, device: torch.device, steps: int, compile_model: bool = True) -> dict[str, Any]:
    config, view, pseudo, classes = paper_config(dataset, device.type)
    out = {"stage_2_3": optimisation_ladder(config, view, pseudo, classes, device, steps, 2, compile_model),
           "stage_1": time_steps(dataclasses.replace(config, precision="auto"), view, None, classes, device, steps,
                                 stage=1, flops=True)}
    if dataset == "voc":
        out["pseudo_mask_pass"] = pseudo_mask_pass(config, classes, device, images=min(200, 20 * steps))
    return out


def bench_cpu_quick(steps: int) -> dict:
    """The small model at ``quick`` scale on the CPU: Stage-1 and Stage-2 steps, the pass over the pool."""
    config = load_config("synth-street", "quick", device="cpu")
    data = load_data(config)
    view = training_view(data, make_split(data.pool_size, config.labels, config.seed))
    pseudo = data.train_masks.clone()  # stands in for stage-1 pseudo-masks: only the timing matters here
    device = torch.device("cpu")
    rss0 = _peak_rss_mb()
    res = time_steps(config, view, pseudo, data.info.num_classes, device, steps, stage=2, flops=True)
    res["stage_1"] = time_steps(config, view, None, data.info.num_classes, device, steps, stage=1)
    res["peak_rss_mb"] = _peak_rss_mb()
    res["peak_rss_mb_before"] = rss0
    net = build_stage_parts(config, 1, view, None, data.info.num_classes, device).model.segmenter
    t0 = time.perf_counter()
    _predict(net, data.train_images, config.eval_batch_size, device)
    res["pseudo_mask_pass_seconds"] = time.perf_counter() - t0
    res["pseudo_mask_pass_images"] = data.pool_size
    return res


# (processes, threads each): alone at 1 and 2 threads, then two runs sharing the cores as a sweep's
# workers do (1 thread each) and as two unaware commands would (torch's default of 2 threads each)
SHARING_LAYOUTS = ((1, 1), (1, 2), (2, 1), (2, 2))


def _timed_worker(threads: int, scale: str, steps: int) -> float:
    """A worker's entry point: seconds per Stage-2 step at ``threads`` threads (``scale``, CPU)."""
    torch.set_num_threads(threads)
    config = load_config("synth-street", scale, device="cpu")
    data = load_data(config)
    view = training_view(data, make_split(data.pool_size, config.labels, config.seed))
    res = time_steps(config, view, data.train_masks.clone(), data.info.num_classes, torch.device("cpu"),
                     steps, stage=2, warmup=2)
    return res["seconds_per_step"]


def bench_sharing(steps: int, scale: str = "quick", layouts=SHARING_LAYOUTS) -> list[dict]:
    """Stage-2 training of ``scale`` in ``processes`` concurrent processes of ``threads`` threads
    each: seconds per step of each and images per second of all together. Shows why a run trains
    at one thread on the CPU and a sweep runs one process per core."""
    batch = load_config("synth-street", scale, device="cpu").batch_size
    rows = []
    for processes, threads in layouts:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            per_step = list(pool.map(_timed_worker, [threads] * processes, [scale] * processes,
                                     [steps] * processes))
        rows.append({"processes": processes, "threads_each": threads,
                     "seconds_per_step": [round(t, 4) for t in per_step],
                     "images_per_second_total": round(sum(batch / t for t in per_step), 2)})
    return rows


def main(out: str = "build/bench", steps: int = 30, compile_model: bool = True) -> int:
    report = {"machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                          "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
              "cpu_quick": bench_cpu_quick(steps),
              "cpu_quick_sharing_cores": bench_sharing(steps)}
    if torch.cuda.is_available():
        device = resolve_device("cuda")
        for dataset in ("voc", "cityscapes"):
            report[f"gpu_r101_{dataset}"] = bench_paper(dataset, device, steps, compile_model)
    else:
        report["gpu"] = "no GPU here: the DeepLabv2-R101 paper settings run when one is present"
    path = atomic_write_json(Path(out) / "bench.json", report)
    print(json.dumps(report, indent=2))
    print(f"written to {path}")
    return 0
