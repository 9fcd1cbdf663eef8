"""Label-shift-aware alignment: estimate the target class priors without target labels, weigh the source by q/p.

- :mod:`~galaxy_da.label_shift.estimators`: BBSE and EM (``align.label_shift: bbse | em``);
- :mod:`~galaxy_da.label_shift.weights`: class ratios :math:`w_y = \\hat q(y)/p(y)` and the
  source sample masses they give every alignment loss;
- :mod:`~galaxy_da.label_shift.refresh`: the trainer's per-epoch re-estimate and its log;
- :mod:`~galaxy_da.label_shift.evaluation`: estimated against true priors, in evaluation only.

Unbalanced Sinkhorn is the other answer to label shift, and has its own key,
``align.reach``, rather than a value of ``align.label_shift``: it is a property
of the transport problem (the marginal constraints become KL penalties of
strength reach²), not an estimate of the target priors; it needs a length scale
of its own; it applies to the Sinkhorn loss only; and the two combine
(re-weighted marginals that are also allowed to deviate).
"""
