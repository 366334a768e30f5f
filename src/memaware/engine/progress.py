"""What a person sees while a run trains, and where its time went.

``RunProgress`` drives one bar per run (a phase of MAT is a run): over epochs for runs on features (thousands of
tiny epochs), over training images for end-to-end runs, with the epoch, the step, the latest loss, images/s and
the ETA; the bar of an end-to-end run stays on screen when the run ends. tqdm writes only to a terminal, so logs
and ``--quiet`` stay clean. ``RunProgress.summary`` is the run's throughput (images, seconds, images/s, and the
seconds spent waiting for data and in evaluations) for ``FitResult.throughput`` and the one-line summary.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .fitting import Run

REFRESH_S = 0.5  # the loss is read (a device sync on CUDA) at most this often, when the bar redraws


class RunProgress:
    """One run's bar and clock. ``steps`` is the run's ``loop.Steps`` (``images`` and ``last_loss`` read when it
    has them); ``per_image``: a bar over images (end to end) rather than epochs; ``total_images`` for the ETA."""

    def __init__(
        self, label: str, steps: Any, first: int, epochs: int, show: bool, per_image: bool = False,
        total_images: int = 0, data_wait: Callable[[], float] | None = None,
    ):  # fmt: skip
        self.label, self.steps, self.first, self.epochs, self.per_image = label, steps, first, epochs, per_image
        self.show = show and sys.stderr.isatty()
        self.start = time.perf_counter()
        self.images0 = getattr(steps, "images", 0)
        self.eval_s = 0.0
        # seconds the model has waited for its input so far (EndToEndNet.feed_stats); evaluations' share apart
        self.data_wait = data_wait or (lambda: 0.0)
        self.wait0, self.eval_wait = self.data_wait(), 0.0
        self.last_draw = 0.0
        self.epoch_start, self.epoch_s = self.start, []  # each epoch's wall seconds, evaluations included
        self.bar = None
        if self.show:
            # constructed only when shown: a tqdm object starts a monitor thread, which keeps can_fork false
            from tqdm.auto import tqdm

            if per_image:
                self.bar = tqdm(total=total_images or None, desc=label, unit="img", leave=True, dynamic_ncols=True)
            else:
                self.bar = tqdm(total=epochs - first + 1, desc=label, unit="epoch", leave=False)

    @property
    def images(self) -> int:
        return getattr(self.steps, "images", 0) - self.images0

    def after_step(self, epoch: int) -> None:
        if self.bar is None or not self.per_image:
            return
        self.bar.update(self.images - self.bar.n)
        now = time.perf_counter()
        if now - self.last_draw >= REFRESH_S:
            self.last_draw = now
            loss = getattr(self.steps, "last_loss", None)
            post = {"epoch": f"{epoch}/{self.epochs}", "step": self.steps.steps}
            if loss is not None:
                post["loss"] = f"{float(loss):.4f}"
            self.bar.set_postfix(post, refresh=False)

    def after_epoch(self, epoch: int) -> None:
        now = time.perf_counter()
        self.epoch_s.append(round(now - self.epoch_start, 4))
        self.epoch_start = now
        if self.bar is not None and not self.per_image:
            self.bar.update(1)

    def timed_evaluation(self, evaluate: Callable[[int], None], epoch: int) -> None:
        t0, w0 = time.perf_counter(), self.data_wait()
        evaluate(epoch)
        self.eval_s += time.perf_counter() - t0
        self.eval_wait += self.data_wait() - w0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def summary(self) -> dict[str, float]:
        """{"images", "seconds", "images_per_s", "data_wait_s", "evaluation_s", "step_s", "epoch_s"}: the run's
        wall time split into training steps waiting for data, evaluations, and the rest (forward, backward,
        optimiser, bookkeeping); images_per_s counts training time only (evaluations apart); epoch_s lists each
        epoch's seconds (evaluations included; end-to-end runs only, a run on features has thousands)."""
        seconds = time.perf_counter() - self.start
        wait_s = self.data_wait() - self.wait0 - self.eval_wait
        train_s = max(seconds - self.eval_s, 1e-9)
        return {
            "images": self.images,
            "seconds": round(seconds, 3),
            "images_per_s": round(self.images / train_s, 1),
            "data_wait_s": round(wait_s, 3),
            "evaluation_s": round(self.eval_s, 3),
            "step_s": round(max(0.0, seconds - self.eval_s - wait_s), 3),
            **({"epoch_s": self.epoch_s} if self.per_image else {}),
        }


def meter_for(run: Run, start: int) -> RunProgress:
    """The run's progress bar and clock: over images for an end-to-end model (its total for the ETA), else over
    epochs."""
    cfg, steps, model = run.config, run.steps, run.model
    per_image = callable(getattr(model, "feed_stats", None))  # an EndToEndNet
    active = run.method.active_positions
    per_epoch = steps.n if active is None else len(active)
    total = per_epoch * max(0, cfg.epochs - start + 1)
    if cfg.max_steps and run.method.trains:
        total = min(total, max(0, cfg.max_steps - steps.steps) * steps.bs)
    wait = (lambda: model.feed_stats()["wait_s"]) if per_image else None
    label = cfg.progress_label or run.method.name
    return RunProgress(label, steps, start, cfg.epochs, cfg.progress, per_image, total, wait)


def summary_line(label: str, epochs: int, throughput: dict[str, float]) -> str:
    """'xrm: 10 epochs, 8,000 images in 6.2 s (1,402 img/s in training); waiting for data 0.1 s, evaluations
    0.5 s'."""
    t = throughput
    return (
        f"{label}: {epochs} epochs, {int(t['images']):,} images in {t['seconds']:.1f} s "
        f"({t['images_per_s']:,.0f} img/s in training); waiting for data {t['data_wait_s']:.1f} s, "
        f"evaluations {t['evaluation_s']:.1f} s"
    )


__all__ = ["RunProgress", "meter_for", "summary_line"]
