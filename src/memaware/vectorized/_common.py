"""Constants shared by the vectorized modules."""

from __future__ import annotations

from ..methods import METHODS

# the registered methods that declare a hand-derived batched loss (``Method.batched_loss``)
SUPPORTED_METHODS = tuple(name for name, cls in METHODS.items() if cls.batched_loss is not None)
# hyper-parameters every member of one program shares (they fix the program's shape and schedule)
SHAPE_KEYS = ("batch_size", "epochs", "max_steps", "optimizer", "hidden", "bias", "class_balanced", "eval_every")
DATA_KEYS = ("data", "dataset", "data_dir", "backbone", "weights", "image_size")
_EVAL_FLOATS = 1 << 24  # bound an evaluation chunk's (rows x members x outputs) to ~64 MB
