"""Training: ``lm2 train`` (LM pretraining on text shards, BABILong fine-tuning) and ``lm2 prepare``."""

from lm2.train.config import Config, load_config
from lm2.train.trainer import Trainer, TrainingDiverged, detach_cache, run_pieces, train

__all__ = ["Config", "Trainer", "TrainingDiverged", "detach_cache", "load_config", "run_pieces", "train"]
