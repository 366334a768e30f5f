"""Memorization audit: per-example memorization / self-influence scores (paper Appendix B.2, eq. 8 with j = i)
and their per-group summaries. See docs/memorization.md for each estimator's formula and target."""

from ..lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("audit_text", "gap_change", "summarize", "train_accuracy", "warnings_for"), "audit"),
    "estimate": "estimate",
    **dict.fromkeys(("ScoredModel", "train_full_models"), "fitting"),
    **dict.fromkeys(("fit_logistic", "linear_scores", "loo_margins"), "linear"),
    **dict.fromkeys(("TARGETS", "MemorizationScores"), "scores"),
    **dict.fromkeys(("split_half_reliability", "subsample_probs", "subsample_scores"), "subsample"),
    **dict.fromkeys(("self_influence", "trak_scores"), "trak"),
    **dict.fromkeys(("fit_own_models", "own_model_factory", "seeded_factory"), "own_model"),
}
# imported on first use (memaware.lazy): the command line reads the estimator names without torch
_lazy = lazy_exports("memaware.memorization", {k: f"memaware.memorization.{m}" for k, m in _EXPORTS.items()})


def __getattr__(name: str) -> object:
    # kept as the package's attribute: importing the submodule ``estimate`` would otherwise leave the module, not
    # the function, behind ``from memaware.memorization import estimate``
    value = _lazy(name)
    globals()[name] = value
    return value


__all__ = [
    "MemorizationScores", "TARGETS", "estimate", "subsample_scores", "subsample_probs", "split_half_reliability",
    "trak_scores", "self_influence", "linear_scores", "fit_logistic", "loo_margins", "ScoredModel",
    "train_full_models", "summarize", "train_accuracy", "warnings_for", "gap_change", "audit_text", "fit_own_models",
    "own_model_factory", "seeded_factory",
]
