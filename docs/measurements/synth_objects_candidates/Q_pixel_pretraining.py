"""Candidate Q (December 7, not adopted): a pixel-level version of the synthetic pre-training.

A probe, not library code. The classification pre-training's generic shapes (L, T, chevron,
double bar) and textures (stripes, checks, dots, blotches), neither dataset's classes, drawn 1-3
(``texture-shape``) or 2-4 (``shape``) to a 64x64 image on a noise background with synth-objects'
background blobs and lines, labelled per pixel: ``texture-shape`` has 17 classes (background + 4
textures x 4 shapes), ``shape`` 5 (background + the 4 shapes, texture ignored: figure/ground and
shape). The small DeepLab (widths 16/32/64/128) is trained on 8,000 such images for 2,000 steps
(Adam, one-cycle lr 2e-3, batch 32, flips, one thread, seed 0) and its backbone saved as a
checkpoint that ``pretrained: <file>`` reads:

    PYTHONPATH=. python docs/measurements/synth_objects_candidates/Q_pixel_pretraining.py shape_os8.pt 8 shape
    python -m selftrain_lib run --dataset synth-objects --scale quick --stages 1 --seed 0 --labels 1/100 \
        --set pretrained=shape_os8.pt

Results: docs/cpu_scale.md, "Probes of December 7".
"""
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from selftrain_lib.data.synthetic.draw import _Canvas, _any_colour, _blend, _t_checks, _t_dots, _t_noise, _t_stripes, _textured
from selftrain_lib.data.synthetic.objects import _blob, _line
from selftrain_lib.data.synthetic.pretraining import _pretrain_shape
from selftrain_lib.models import build_segmenter
from selftrain_lib.optim import Adam


def image(i: int, classes: str, seed: int = 0, size: int = 64):
    """Image ``i``: uint8 (size, size, 3) and its label mask (size, size)."""
    rng = np.random.default_rng([seed, 7, i])
    cv = _Canvas(size, size)
    Y, X = cv.Y, cv.X
    cv.paint((slice(None), slice(None)), np.ones((size, size), bool),
             _textured(rng, "noise", Y, X, _any_colour(rng), contrast=(0.1, 0.5), grain=(0, 0.1)), 0)
    for _ in range(rng.integers(0, 3)):
        _blob(rng, cv, rng.uniform(0, size), rng.uniform(0, size), rng.uniform(4, 12))
    for _ in range(rng.integers(0, 3)):
        _line(rng, cv)
    for _ in range(rng.choice([2, 3, 4] if classes == "shape" else [1, 2, 3])):
        label = int(rng.integers(16))
        tex, shp = divmod(label, 4)
        r = rng.uniform(0.14, 0.3) * size
        cy, cx = rng.uniform(0.15, 0.85, 2) * size
        m = _pretrain_shape(shp, Y, X, cy, cx, r, rng.uniform(0, 2 * np.pi))
        if tex == 0:
            t = _t_stripes(rng, Y, X, period=(3, 8), square=rng.random() < 0.5)
        elif tex == 1:
            t = _t_checks(rng, Y, X, period=(3, 8))
        elif tex == 2:
            t = _t_dots(rng, Y, X, period=(4, 9))
        else:
            t = np.sign(_t_noise(rng, Y, X, period=(5, 14)))
        c1, c2 = _any_colour(rng), _any_colour(rng)
        if np.abs(c1 - c2).sum() < 120:
            c2 = 255.0 - c1
        cv.paint((slice(None), slice(None)), m, _blend(t, c1, c2), 1 + (shp if classes == "shape" else label))
    return cv.finish(rng)


def main(out: str, output_stride: int, classes: str, steps: int = 2000, n: int = 8000, bs: int = 32, lr: float = 2e-3):
    torch.set_num_threads(1)
    t0 = time.time()
    pairs = [image(i, classes) for i in range(n)]
    imgs = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
    labs = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
    torch.manual_seed(0)
    net = build_segmenter("deeplabv2-small", 5 if classes == "shape" else 17, widths=(16, 32, 64, 128),
                          output_stride=output_stride)
    opt = Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    net.train()
    for step in range(steps):
        idx = torch.randint(0, n, (bs,), generator=g)
        x, y = imgs[idx].float() / 255, labs[idx]
        flip = torch.rand(bs, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None], y.flip(-1), y)
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            hit = logits.argmax(1) == y
            fg = y > 0
            print(f"step {step} loss {loss.item():.3f} pixel acc {hit.float().mean().item():.3f} "
                  f"object-pixel acc {(hit & fg).sum().item() / max(fg.sum().item(), 1):.3f} {time.time() - t0:.0f} s",
                  flush=True)
    torch.save({"backbone." + k: v.detach().clone() for k, v in net.backbone.state_dict().items()}, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
