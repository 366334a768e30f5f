"""MAT in a training loop of your own (plain PyTorch, no memaware trainer): docs/own-loop.md.

- ``XRMTwins``: XRM's twin models with label flipping; gives held-out logits for every training example and
  inferred validation groups (cross-mistakes).
- ``MATLoss``: eq. 7's shifted cross-entropy from any held-out logits, a criterion like ``nn.CrossEntropyLoss``.
- ``MATSingleRun``: one backbone with heads A, B (XRM) and C (MAT) trained in the same run (paper Appendix A).

Every example is addressed by its position 0..num_train-1 in the training set: your ``Dataset`` returns it.
"""

from .loss import MATLoss
from .single_run import MATSingleRun
from .twins import XRMTwins

__all__ = ["XRMTwins", "MATLoss", "MATSingleRun"]
