"""Winning tickets (METHOD.md §5): train a net with DessiLBI, keep the filters in Γ's support,
physically remove the others, fine-tune the smaller net, and compare it with the same small
net trained from a fresh initialisation.

Definitions used throughout:

- **Support of a layer**: the union, over every conv producing the layer's channels
  (:func:`grownet.models.layer_conv_weights`), of the filters whose Γ group is non-zero. A
  ResNet residual channel is therefore kept if ANY block's ``conv2`` or the projection
  shortcut that writes it has it in Γ's support. When stage 0's first block has no projection
  shortcut, the stem's channels are the same residual channels, so ``stem`` and ``stages.0``
  share one keep set (the union of both supports).
- **Keep set** of a layer: its support; a layer whose support is empty keeps its one filter
  with the largest score (‖V_g‖ when an optimizer is given, else ‖W_g‖), so every layer
  keeps at least one filter.
- **Masked net**: the dense net with every removed channel's producing conv filters set to
  zero (W ⊙ 1[channel kept]); everything else unchanged. In eval mode a removed channel then
  carries a per-channel constant: ``relu(bias - running_mean * weight / sqrt(running_var +
  eps))`` of its BatchNorm (for a ResNet residual channel, that constant accumulated through
  the stage's blocks).
- **Pruned net** (the ticket): a physically smaller net with the keep sets' widths, every
  tensor sliced from the dense one (conv outputs, BatchNorm, consumers' fan-in, classifier
  columns), and the removed channels' constants folded into their consumers:

  ========================================  ===================================  ===============
  consumer of a removed channel             folded into                          exact?
  ========================================  ===================================  ===============
  linear classifier after global avg pool   ``classifier.bias``                  exact
  1x1 projection shortcut (no padding)      shortcut BN ``running_mean``         exact
  3x3 conv with zero padding 1              next BN ``running_mean``             approximate
  ========================================  ===================================  ===============

  A 3x3 consumer with zero padding adds ``k_c * sum(W[o, c, taps inside the image])`` to its
  output ``o``: all 9 taps in the interior, fewer at the border (padding zeros replace the
  constant there), so no per-channel constant reproduces it everywhere. ``fold="interior"``
  folds the 9-tap sum (exact in the interior, wrong at the border ring, and at every position
  of a 2x2 map); ``fold="mean"`` (the default) folds its average over output positions (the
  least-squares constant, exact for the BN input's spatial mean), which measured closer to the
  masked net (VGG with 2 stages, 32 px, Γ supports after 60 DessiLBI steps, 5 seeds: accuracy
  on 400 images within 0.5 points of the masked net for "mean" every time, up to 2.5 points
  off for "interior"). Errors at one layer's border propagate inward through later layers.
  Folding into ``running_mean`` is the eval-mode fold; in training mode BatchNorm subtracts the
  batch mean, which absorbs a constant shift anyway. :func:`ticket` measures the pruned net
  with every fold mode against the masked net.
"""

from __future__ import annotations

from ._job import SCORE_LABELS, Score, TicketResult, resolve_arch, summary_dict, ticket
from ._prune import (FOLD_MODES, Consumer, FoldRecord, PruneResult, filter_scores, filter_support, keep_sets,
                     layer_supports, mask_model, prune_model, reduced_arch, removed_constants, tap_coverage,
                     tied_layers, wiring)
from ._study import ARM_LABELS, DIFFERENCES, TICKET_ARMS, run_ticket_study, summarize_ticket_study
from ._threshold import RELATIVE_TO, KeepSolution, random_keep, solve_keep
from ._report import (REPORT_SECTIONS, SupportInfo, render_ticket_report, support_figure, support_info,
                      write_ticket_report)

__all__ = [
    "ARM_LABELS",
    "DIFFERENCES",
    "KeepSolution",
    "TICKET_ARMS",
    "random_keep",
    "run_ticket_study",
    "solve_keep",
    "summarize_ticket_study",
    "FOLD_MODES",
    "REPORT_SECTIONS",
    "SCORE_LABELS",
    "Consumer",
    "FoldRecord",
    "PruneResult",
    "Score",
    "SupportInfo",
    "TicketResult",
    "filter_scores",
    "filter_support",
    "keep_sets",
    "layer_supports",
    "mask_model",
    "prune_model",
    "reduced_arch",
    "removed_constants",
    "render_ticket_report",
    "resolve_arch",
    "summary_dict",
    "support_figure",
    "support_info",
    "tap_coverage",
    "ticket",
    "tied_layers",
    "wiring",
    "write_ticket_report",
]
