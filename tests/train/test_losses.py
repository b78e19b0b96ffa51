"""The three ranking losses against hand-computed cases."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from jemc_infer.errors import InputShapeError  # noqa: E402
from jemc_infer.train.losses import ranking_loss  # noqa: E402

# scores S = video @ text.T; with video = I, S[i, j] = text[j, i], so text = S.T
S = torch.tensor([[0.9, 0.8, 0.1],
                  [0.3, 0.5, 0.6],
                  [0.2, 0.4, 0.7]], dtype=torch.float64)
VIDEO = torch.eye(3, dtype=torch.float64)
TEXT = S.T.clone()

# Hinges with margin 0.2 (worked by hand):
#   video→text (row i vs its diagonal):  row0 [_, .1, 0]  row1 [0, _, .3]  row2 [0, 0, _]
#   text→video (column j vs diagonal):   col0 [_, 0, 0]   col1 [.5, _, .1] col2 [0, .1, _]
# sum: .1 + .3 + .5 + .1 + .1 = 1.1;  hardest: (.1 + .3 + 0) + (0 + .5 + .1) = 1.0
# ranks of the positive (1-based, strict >): v2t rows [1, 2, 1], t2v columns [1, 2, 1], N = 3
# weights 1 + 1/(N - r + 1): r=1 → 4/3, r=2 → 3/2
# weighted: v2t .1·4/3 + .3·3/2 + 0 = 0.58333…;  t2v 0 + .5·3/2 + .1·4/3 = 0.88333…


@pytest.mark.parametrize(("mode", "expected"), [("sum", 1.1), ("hardest", 1.0), ("weighted", 0.1 * 4 / 3 + 0.3 * 1.5 + 0.5 * 1.5 + 0.1 * 4 / 3)])
def test_hand_computed(mode: str, expected: float) -> None:
    assert ranking_loss(VIDEO, TEXT, margin=0.2, mode=mode).item() == pytest.approx(expected, abs=1e-12)


def test_margin_zero_and_perfect_separation_give_zero() -> None:
    v = torch.eye(4, dtype=torch.float64)
    for mode in ("sum", "hardest", "weighted"):
        assert ranking_loss(v, v, margin=0.2, mode=mode).item() == 0.0  # off-diagonal 0 < 1 - 0.2
    assert ranking_loss(VIDEO, TEXT, margin=0.0, mode="sum").item() == pytest.approx(0.6 - 0.5 + 0.8 - 0.5, abs=1e-12)


def test_weight_carries_no_gradient() -> None:
    """The weighted loss's gradient equals that of the hardest hinges times constant weights."""
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(6, 5, dtype=torch.float64), dim=1).requires_grad_()
    t = torch.nn.functional.normalize(torch.randn(6, 5, dtype=torch.float64), dim=1).requires_grad_()
    ranking_loss(v, t, mode="weighted").backward()
    got_v, got_t = v.grad.clone(), t.grad.clone()

    v2, t2 = v.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
    s = v2 @ t2.T
    d = s.diagonal()
    off = ~torch.eye(6, dtype=torch.bool)
    hv = ((0.2 + s - d.view(6, 1)).clamp(min=0) * off).max(1).values
    ht = ((0.2 + s - d.view(1, 6)).clamp(min=0) * off).max(0).values
    rv = 1 + (s.detach() > d.detach().view(6, 1)).sum(1)
    rt = 1 + (s.detach() > d.detach().view(1, 6)).sum(0)
    ((1 + 1 / (6 - rv + 1.0)) * hv).sum().add(((1 + 1 / (6 - rt + 1.0)) * ht).sum()).backward()
    assert torch.allclose(got_v, v2.grad) and torch.allclose(got_t, t2.grad)
    assert got_v.abs().sum() > 0


def test_hardest_is_at_most_sum_and_weighted_between_hardest_and_twice() -> None:
    torch.manual_seed(1)
    v = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    t = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    hard, total, w = (ranking_loss(v, t, mode=m).item() for m in ("hardest", "sum", "weighted"))
    assert 0 < hard <= total
    assert hard < w <= 2 * hard


def test_refuses_bad_shapes_and_modes() -> None:
    with pytest.raises(InputShapeError, match="expected two"):
        ranking_loss(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        ranking_loss(VIDEO, TEXT, mode="softmax")
