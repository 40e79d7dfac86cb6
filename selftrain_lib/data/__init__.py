"""Datasets: what a stage may see (images of L∪U, masks of L) and what only evaluation may see."""
from .authors import SPLITS, authors_split_file, labelled_list, split_source
from .datasets import (DATASETS, PAPER_LABEL_COUNTS, ArrayDataset, DatasetInfo, FileSegmentationData,
                       FileTrainingView, SegmentationData, Split, TrainingView, check_files_once, config_dataset,
                       data_fingerprint, dataset_info, load_data, make_split, open_files, paper_splits, read_split,
                       register_dataset, training_view, write_split)
from .records import RECORDS, DatasetRecord, PaperDataset, discover, register

# every module of this package that registers a dataset (a new one is found here, named nowhere else)
discover(__name__, __path__)

__all__ = ["SPLITS", "authors_split_file", "labelled_list", "split_source", "DATASETS", "PAPER_LABEL_COUNTS", "ArrayDataset", "DatasetInfo", "FileSegmentationData", "FileTrainingView",
           "SegmentationData", "Split", "TrainingView", "check_files_once", "data_fingerprint",
           "config_dataset", "dataset_info",
           "load_data", "make_split", "RECORDS", "DatasetRecord", "PaperDataset", "register", "open_files", "paper_splits", "read_split", "register_dataset", "training_view",
           "write_split"]
