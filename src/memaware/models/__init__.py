"""Models: ``MultiHeadNet`` (identity or MLP backbone + several linear heads in one matmul), the ensemble MLP of
Fig. 3 (``heads``), and end-to-end backbones behind ``EndToEndNet`` (``backbones``: ResNet-50, BERT, tiny
stand-ins; torchvision and transformers are imported only when such a backbone is built). The names below are
imported on first use (``memaware.lazy``), so ``models.catalog`` (backbone names) reads without torch."""

from ..lazy import lazy_exports

_NAMES = (
    "ACTIVATIONS", "EnsembleMLP", "MultiHead", "MultiHeadNet", "all_logits", "build_model", "init_heads_",
    "init_linear_",
)  # fmt: skip
__getattr__ = lazy_exports("memaware.models", dict.fromkeys(_NAMES, "memaware.models.heads"))

__all__ = list(_NAMES)
