"""Models: ``MultiHeadNet`` (identity or MLP backbone + several linear heads in one matmul), the ensemble MLP of
Fig. 3 (``heads``), and end-to-end backbones behind ``EndToEndNet`` (``backbones``: ResNet-50, BERT, tiny
stand-ins; torchvision and transformers are imported only when such a backbone is built)."""

from .heads import (
    ACTIVATIONS,
    EnsembleMLP,
    MultiHead,
    MultiHeadNet,
    all_logits,
    build_model,
    init_heads_,
    init_linear_,
)

__all__ = [
    "ACTIVATIONS", "EnsembleMLP", "MultiHead", "MultiHeadNet", "all_logits", "build_model", "init_heads_",
    "init_linear_",
]  # fmt: skip
