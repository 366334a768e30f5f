"""Memorization audit: per-example memorization / self-influence scores (paper Appendix B.2, eq. 8 with j = i)
and their per-group summaries. See docs/memorization.md for each estimator's formula and target."""

from .audit import audit_text, gap_change, summarize, warnings_for
from .estimate import estimate
from .fitting import ScoredModel, train_full_models
from .linear import fit_logistic, linear_scores, loo_margins
from .scores import TARGETS, MemorizationScores
from .subsample import split_half_reliability, subsample_probs, subsample_scores
from .trak import self_influence, trak_scores

__all__ = [
    "MemorizationScores", "TARGETS", "estimate", "subsample_scores", "subsample_probs", "split_half_reliability",
    "trak_scores", "self_influence", "linear_scores", "fit_logistic", "loo_margins", "ScoredModel",
    "train_full_models", "summarize", "warnings_for", "gap_change", "audit_text",
]
