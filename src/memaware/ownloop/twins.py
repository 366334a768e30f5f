"""``XRMTwins``: XRM (Pezeshki et al. 2023), the environment-discovery phase of MAT, as an ``nn.Module`` for a
training loop of your own.

Two fresh models ("twins") each hold in a random half of the training set. A step trains each twin on its held-in
examples with the class-balanced cross-entropy, then replaces each example's training label by the held-out twin's
argmax with probability (p_ho - 1/K) K / (K - 1). After training, the held-out twin's logits for every training
example are what MAT (paper eq. 7, ``MATLoss``) needs. The math is ``memaware.methods.xrm``'s, reused as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..methods.xrm import class_balanced_ce, cross_mistake_groups, flip_labels, pick_head, random_halves
from .checks import check_count, check_labels, check_logits, check_positions, shape_of


class XRMTwins(nn.Module):
    """Two models on disjoint random halves of the training set, with XRM's label flipping.

    ``model_factory()`` (no argument) returns a new model mapping a batch x to (b, num_classes) logits; it is called
    twice (the twins' initial weights come from torch's global RNG: seed it for reproducible runs). Example i is the
    one at position i (0..num_train-1) of your training set: your ``Dataset`` returns it beside (x, y). ``seed``
    seeds the halves and the flips' coin tosses (a generator of this module's own, nothing global).

    State (all in ``state_dict``, so a checkpoint resumes exactly): ``held_in`` (num_train,) which twin trains on
    each example; ``y_train`` (num_train,) the original labels as first seen (-1 = not seen yet); ``labels``
    (num_train,) the current (flipped) training labels; ``rng_state`` the generator's state.

    A step of your loop::

        loss = twins.loss(x, y, idx)      # x (b, ...), y (b,), idx (b,) int64 positions
        opt.zero_grad(); loss.backward(); opt.step()   # opt over twins.parameters()
    """

    def __init__(self, model_factory: Callable[[], nn.Module], num_train: int, num_classes: int, seed: int = 0):
        super().__init__()
        if not callable(model_factory):
            raise ConfigError(f"model_factory must be a callable returning a new model, got {model_factory!r}")
        self.num_train = check_count("num_train", num_train, 2)
        self.num_classes = check_count("num_classes", num_classes, 2)
        check_count("seed", seed, 0)
        a, b = model_factory(), model_factory()
        if not (isinstance(a, nn.Module) and isinstance(b, nn.Module)) or a is b:
            raise ConfigError(f"model_factory must return a new nn.Module on each call, got {type(a).__name__}")
        self.twins = nn.ModuleList([a, b])
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("held_in", random_halves(num_train, generator))
        self.register_buffer("y_train", torch.full((num_train,), -1, dtype=torch.long))
        self.register_buffer("labels", torch.full((num_train,), -1, dtype=torch.long))
        self.register_buffer("rng_state", generator.get_state())

    # ---- forward --------------------------------------------------------------------------------------------
    def forward(self, x: Any) -> torch.Tensor:
        """x (b, ...) -> (b, 2, K): both twins' logits (twin 0 then twin 1)."""
        out = [twin(x) for twin in self.twins]
        for o in out:
            check_logits("model_factory() output", o, self.num_classes)
        if out[0].shape != out[1].shape:
            raise ConfigError(f"the twins' outputs differ in shape: {tuple(out[0].shape)} vs {tuple(out[1].shape)}")
        return torch.stack(out, dim=1)

    # ---- training -------------------------------------------------------------------------------------------
    def loss(self, x: Any, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """XRM's loss on the batch (a scalar to backpropagate), then the batch's labels flipped (``xrm_loss``).

        x (b, ...) the batch, y (b,) its original labels, idx (b,) its positions in the training set."""
        return self.xrm_loss(self(x), y, idx)

    def xrm_loss(self, logits_ab: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``loss`` on logits already computed: logits_ab (b, 2, K) = ``self(x)``.

        Returns sum_k mean_{i in batch, label_i = k} CE(z_{held_in(i), i}, label_i) (``class_balanced_ce``) with
        the current labels; then each label_i becomes argmax z_{held_out(i), i} with probability
        (p_ho - 1/K) K / (K - 1) (``flip_labels``, on the detached logits: those before your optimiser step, as
        memaware's engine flips after the step with the pre-step logits)."""
        if logits_ab.dim() != 3 or logits_ab.shape[1:] != (2, self.num_classes):
            raise ConfigError(f"logits_ab must have shape (b, 2, {self.num_classes}), got {shape_of(logits_ab)}")
        pos = self._record(y, idx, len(logits_ab))
        dev = logits_ab.device
        held_in = pick_head(logits_ab, self.held_in[pos].to(dev))
        labels = self.labels[pos]  # a copy: the flip below cannot reach the loss's saved targets
        loss = class_balanced_ce(held_in, labels.to(dev), self.num_classes)
        with torch.no_grad():
            heldout = pick_head(logits_ab.detach(), (1 - self.held_in[pos]).to(dev))
            generator = self._generator()
            self.labels[pos] = flip_labels(labels.to(dev), heldout, generator).to(self.labels.device)
            self.rng_state.copy_(generator.get_state())
        return loss

    def _record(self, y: torch.Tensor, idx: torch.Tensor, b: int) -> torch.Tensor:
        """Checks y and idx; the first time a position is seen, its label becomes its training label."""
        idx = check_positions(idx, self.num_train, b).to(self.labels.device)
        y = check_labels("y", y, self.num_classes, b).to(self.labels.device)
        known = self.y_train[idx]
        clash = (known >= 0) & (known != y)
        if bool(clash.any()):
            i = int(idx[clash][0])
            raise ConfigError(
                f"y disagrees at idx {i}: label {int(y[clash][0])} now, {int(self.y_train[i])} when first seen "
                "(are positions aligned with examples?)"
            )
        new = known < 0
        if bool(new.any()):
            self.y_train[idx[new]] = y[new]
            self.labels[idx[new]] = y[new]
        return idx

    def _generator(self) -> torch.Generator:
        generator = torch.Generator()
        generator.set_state(self.rng_state.cpu())
        return generator

    # ---- outputs --------------------------------------------------------------------------------------------
    def heldout(self, logits_ab: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(b, 2, K) logits of both twins, (b,) positions -> (b, K) the held-out twin's."""
        pos = check_positions(idx, self.num_train, len(logits_ab)).to(self.held_in.device)
        return pick_head(logits_ab, (1 - self.held_in[pos]).to(logits_ab.device))

    @torch.no_grad()
    def heldout_logits(self, x: Any, idx: torch.Tensor) -> torch.Tensor:
        """(b, K) logits of the twin that never trained on each example (eval mode, no grad; the modules' training
        flags are restored after)."""
        with eval_mode(self):
            return self.heldout(self(x), idx)

    @torch.no_grad()
    def heldout_logits_all(self, loader: Iterable[Any], device: torch.device | str | None = None) -> torch.Tensor:
        """(num_train, K) float32 held-out logits on the CPU, row i for position i, from one pass over ``loader``.

        ``loader`` yields (x, y, idx) batches (or (x, idx)) covering every position: use a sequential loader, not
        a weighted or shuffled sampler (any order is fine, but every position must come). x goes to ``device``
        (default: where the twins' parameters are)."""
        device = device if device is not None else _device_of(self)
        out = torch.full((self.num_train, self.num_classes), float("nan"))
        seen = torch.zeros(self.num_train, dtype=torch.bool)
        for batch in loader:
            if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
                raise ConfigError(f"loader must yield (x, y, idx) or (x, idx) batches, got {type(batch).__name__}")
            x, idx = batch[0], batch[-1]
            x = x.to(device) if isinstance(x, torch.Tensor) else x
            idx = torch.as_tensor(idx)
            out[idx.cpu()] = self.heldout_logits(x, idx).float().cpu()
            seen[idx.cpu()] = True
        if not bool(seen.all()):
            missing = (~seen).nonzero().flatten()
            raise ConfigError(
                f"loader missed {len(missing)} of {self.num_train} positions (first: idx {int(missing[0])}); "
                "held-out logits must cover the whole training set"
            )
        return out

    @torch.no_grad()
    def infer_groups(self, x: Any, y: torch.Tensor) -> torch.Tensor:
        """XRM's inferred groups for (validation) examples: (b,) y * 2 + [either twin mispredicts] (cross-mistakes),
        for model selection by worst-group accuracy without group labels."""
        with eval_mode(self):
            logits_ab = self(x)
        y = check_labels("y", y, self.num_classes, len(logits_ab)).to(logits_ab.device)
        return cross_mistake_groups(logits_ab, y)

    def flipped_fraction(self) -> float:
        """The share of the examples seen so far whose training label is flipped now."""
        seen = self.y_train >= 0
        return float((self.labels[seen] != self.y_train[seen]).float().mean()) if bool(seen.any()) else 0.0

    def extra_repr(self) -> str:
        return f"num_train={self.num_train}, num_classes={self.num_classes}"


class eval_mode:
    """Puts ``module`` (and its children) in eval mode, restoring each one's own training flag after."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self) -> None:
        self.flags = [(m, m.training) for m in self.module.modules()]
        self.module.eval()

    def __exit__(self, *exc: Any) -> None:
        for m, flag in self.flags:
            m.training = flag


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


__all__ = ["XRMTwins"]
