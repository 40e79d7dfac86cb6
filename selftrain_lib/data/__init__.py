"""Datasets: what a stage may see (images of L∪U, masks of L) and what only evaluation may see."""
from .datasets import (DATASETS, PAPER_LABEL_COUNTS, check_files_once, data_fingerprint, open_files, paper_splits, register_dataset, DatasetInfo, SegmentationData, Split, TrainingView, dataset_info,
                       hidden_truth, load_data, make_split, read_split, training_view, write_split)

__all__ = ["DATASETS", "PAPER_LABEL_COUNTS", "check_files_once", "data_fingerprint", "open_files", "paper_splits", "register_dataset", "DatasetInfo", "SegmentationData", "Split", "TrainingView", "dataset_info",
           "hidden_truth", "load_data", "make_split", "read_split", "training_view", "write_split"]
