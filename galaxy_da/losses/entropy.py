"""Prediction entropy, minimised on the unlabelled target batch."""

import torch
import torch.nn.functional as F


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    r"""Mean Shannon entropy of the softmax predictions, in nats.

    .. math:: H = \frac{1}{N}\sum_i -\sum_c p_{ic}\log p_{ic}, \qquad p_i = \mathrm{softmax}(z_i)

    Shapes: ``logits`` (N, C) -> scalar in [0, log C]. Computed with
    ``log_softmax``, so saturated logits give 0 rather than NaN.
    """
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()
