"""Transfer learning: a trained network, a new classifier head for the user's classes, trained on their pictures.

``run_finetune(FinetuneSpec(...))`` is the whole of `edgekit finetune`: ``data`` reads and splits the pictures and
augments the training ones, ``network`` chooses what trains, ``training`` caches the frozen layers' outputs and
runs the epochs with a checkpoint each, ``outputs`` writes the files, and ``run`` orders them (and the export).
"""

from .run import FinetuneResult, FinetuneSpec, run_finetune

__all__ = ["FinetuneResult", "FinetuneSpec", "run_finetune"]
