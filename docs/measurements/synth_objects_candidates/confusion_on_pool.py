"""Where a synth-objects run's object pixels go: the confusion matrix of its pseudo-masks on U.

A probe, not library code. A stage's ``pseudo_masks/`` hold its prediction for every pool image; the
unlabelled ones against the generated truth give the confusion on U (rows: truth, columns:
prediction, each row a fraction of its pixels), e.g. for D at ``cpu`` (patch A applied):

    PYTHONPATH=. python docs/measurements/synth_objects_candidates/confusion_on_pool.py <run folder>
"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from selftrain_lib.data.synthetic import load_synthetic


def confusion_on_pool(run: Path) -> np.ndarray:
    config = json.loads((run / "config.json").read_text())
    config = config.get("config", config)
    data = load_synthetic(config["dataset"], pool_size=config["pool_size"], val_size=config["val_size"])
    labelled = set((run / "labelled_ids.txt").read_text().split())
    k = int(data["train_masks"].max()) + 1
    counts = np.zeros((k, k), np.int64)
    for i, truth in enumerate(data["train_masks"]):
        name = f"train_{i:05d}"
        if name in labelled:
            continue
        pred = np.asarray(Image.open(run / "pseudo_masks" / f"{name}.png"))
        ok = truth < k
        counts += np.bincount(truth[ok].astype(int) * k + pred[ok].astype(int), minlength=k * k).reshape(k, k)
    return counts


if __name__ == "__main__":
    counts = confusion_on_pool(Path(sys.argv[1]))
    if not counts.any():
        sys.exit(f"{sys.argv[1]}: every pool image is labelled (full supervision): no U to compare on")
    np.set_printoptions(precision=2, suppress=True)
    print("rows: truth; columns: prediction; fractions of each truth row")
    print(counts / counts.sum(1, keepdims=True))
    print("IoU %:", 100 * np.diag(counts) / (counts.sum(0) + counts.sum(1) - np.diag(counts)))
