import pytest
import torch
from torch.autograd.functional import jacobian

from srvae.flows.made import MADE, ordering_degrees

D, C = 5, 3


def made_jacobian(made: MADE, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """d output[j, i] / d x[i'] as a [outputs_per_feature, D, D] tensor."""
    return jacobian(lambda v: made(v, context), x)


@pytest.mark.parametrize("degrees", [ordering_degrees(D), ordering_degrees(D, reverse=True),
                                     torch.tensor([3, 1, 5, 2, 4])])
@pytest.mark.parametrize("with_context", [False, True])
def test_output_depends_exactly_on_the_inputs_earlier_in_the_ordering(degrees, with_context):
    torch.manual_seed(0)
    made = MADE(D, (4 * D, 4 * D), 2, C if with_context else None, degrees)
    context = torch.randn(C) if with_context else None
    jac = made_jacobian(made, torch.randn(D), context)
    earlier = degrees[None, :] < degrees[:, None]  # [i, i']: input i' comes strictly before output i
    assert (jac[:, ~earlier] == 0).all(), "an output sees its own or a later input"
    assert (jac[:, earlier] != 0).all(), "an allowed connection is missing"


def test_context_reaches_every_output_including_the_first_in_the_ordering():
    torch.manual_seed(0)
    made = MADE(D, (3 * D,), 2, C, ordering_degrees(D, reverse=True))
    jac = jacobian(lambda c: made(torch.randn(D), c), torch.randn(C))  # [2, D, C]
    assert (jac.abs().sum(-1) > 0).all()


def test_leading_batch_dimensions_and_output_shape():
    made = MADE(D, (10,), 3, C)
    out = made(torch.randn(4, 2, D), torch.randn(4, 2, C))
    assert out.shape == (4, 2, 3, D)


def test_invalid_orderings_and_missing_context_are_errors():
    with pytest.raises(ValueError, match="permutation"):
        MADE(D, (10,), input_degrees=torch.tensor([1, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match="context"):
        MADE(D, (10,), context_features=C)(torch.randn(D))


def test_a_layer_narrower_than_its_degrees_draws_them_at_random_and_keeps_every_path():
    """The MAF paper's CIFAR-10 setting: fewer hidden units than degrees. Cyclic degrees would stop short of
    D − 1 and cut the later inputs off; random ones (one unit pinned to the lowest degree) do not."""
    features, width = 12, 5
    torch.manual_seed(0)
    made = MADE(features, (width, width), 2, C)
    degrees = made.hidden[0].mask.sum(1)  # a unit of degree m sees inputs 1..m
    assert degrees.max() > width - 1 and (made.hidden[1].mask.sum(1) > 0).all()
    x = torch.randn(features)
    jac = jacobian(lambda v: made(v, torch.randn(C)), x)
    order = made.input_degrees
    assert (jac[:, order[None, :] >= order[:, None]] == 0).all(), "an output sees its own or a later input"
    context_jac = jacobian(lambda c: made(x, c), torch.randn(C))
    assert (context_jac.abs().sum(-1) > 0).all(), "the context must reach every output"
