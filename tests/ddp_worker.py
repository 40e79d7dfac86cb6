"""Run by tests/test_distributed.py under torchrun (2 processes, gloo, CPU): a smoke run of the
method, recording on each rank what it trained, drew and wrote. Not a test module itself."""
import hashlib
import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

import selftrain_lib
import selftrain_lib.stage as stage_mod
from selftrain_lib.distributed import unwrap
from selftrain_lib.train import checkpoint, final_pass, run_folder


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(out: str, stages: int, method: str, dataset: str = "synth-street", data_root: str | None = None) -> None:
    record = {"weights": [], "batches": [], "losses": [], "writes": []}
    real_step = stage_mod.train_step

    crash_at = int(os.environ.get("CRASH_AT_CALL", "0"))  # every rank stops there: an interrupted job

    def recording_step(model, teacher, optimizer, batch, *args, **kwargs):
        if len(record["weights"]) + 1 == crash_at:
            raise SystemExit(3)
        losses = real_step(model, teacher, optimizer, batch, *args, **kwargs)
        net = unwrap(model)
        teacher_state = list(teacher.state_dict().values()) if teacher is not None else []
        record["weights"].append(digest([*net.state_dict().values(), *teacher_state]))
        record["batches"].append(digest([batch.images]))
        record["losses"].append(float(losses["loss"]))
        return losses

    stage_mod.train_step = recording_step
    # the run's files; the pseudo-mask PNGs are written by every rank, its share, into rank 0's
    # temporary folder (test_a_file_dataset_on_two_ranks_writes_every_pseudo_mask_once)
    for module in (run_folder, checkpoint, final_pass):  # where the stage's writes are made
        for name in ("atomic_write_json", "atomic_write_text", "atomic_torch_save", "atomic_savez", "write_csv"):
            real = getattr(module, name, None)
            if real is None:
                continue

            def writer(path, *args, _real=real, **kwargs):
                record["writes"].append(str(path))
                return _real(path, *args, **kwargs)

            setattr(module, name, writer)
    where = {"data_root": data_root, "resize": [16, 32], "crop_size": [16, 16]} if data_root else {}
    result = selftrain_lib.run(dataset=dataset, scale="smoke", stages=stages, out=out, progress=False, method=method,
                               **where)
    rank = dist.get_rank()
    record.update(rank=rank, world_size=dist.get_world_size(), hashes=[r.run_hash for r in result.stages],
                  val_miou=[r.val_miou for r in result.stages])
    Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
