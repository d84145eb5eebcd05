"""The contract every bijector of the study passes (as nflows' transform tests do): shapes, finite values,
``inverse(forward(x)) = x``, the inverse's log-determinant minus the forward's, the forward's
log-determinant equal to ``log|det J|`` of a dense Jacobian, and ``transform`` (the map without its
log-determinant) the very values of ``forward``'s map."""

from collections.abc import Callable

import pytest
import torch
from torch.autograd.functional import jacobian

from srvae.flows.base import Bijector, IdentityBijector
from srvae.flows.batch_norm import BatchNormBijector
from srvae.flows.iaf import IAF, IAFStep
from srvae.flows.maf import MAFLayer, MaskedAutoregressiveFlow
from srvae.flows.spline_coupling import SplineCouplingFlow
from srvae.sere.bijector import AffineRankOneBijector

N, C = 5, 3
LEADING = (4, 2)  # [k, B]: bijectors act on any leading dimensions

def _with_statistics(bijector: Bijector) -> Bijector:
    """In eval mode (a fixed map of each vector) with batch-norm statistics away from (0, 1)."""
    for layer in bijector.modules():
        if isinstance(layer, BatchNormBijector):
            layer.mean.uniform_(-1.0, 1.0)
            layer.var.uniform_(0.5, 2.0)
    return bijector.eval()


#: name → (factory, context width or None)
BIJECTORS: dict[str, tuple[Callable[[], Bijector], int | None]] = {
    "identity": (IdentityBijector, None),
    "affine-rank-one": (lambda: AffineRankOneBijector(N, context_dim=C, hidden=(16,), act="elu"), C),
    "affine-rank-one-free": (lambda: AffineRankOneBijector(N, context_dim=0, hidden=(16,), act="elu"), None),
    "iaf-step": (lambda: IAFStep(N, (16, 16), C), C),
    "iaf-step-reversed": (lambda: IAFStep(N, (16,), C, reverse=True), C),
    "iaf-step-free": (lambda: IAFStep(N, (16,)), None),
    "iaf-stack": (lambda: IAF(N, 3, (16,), C), C),
    "batch-norm": (lambda: _with_statistics(BatchNormBijector(N)), None),
    "maf-layer": (lambda: MAFLayer(N, (16, 16), C), C),
    "maf-layer-reversed-free": (lambda: MAFLayer(N, (16,), reverse=True), None),
    "maf-layer-random-degrees": (lambda: MAFLayer(N, (3,), C), C),
    "maf-stack": (lambda: _with_statistics(MaskedAutoregressiveFlow(N, 2, (8,), C)), C),
    "spline-coupling": (lambda: SplineCouplingFlow(N, C, layers=2, bins=4, hidden=(16,)), C),
    "spline-coupling-free": (lambda: SplineCouplingFlow(N, None, layers=3, hidden=(16,), act="elu"), None),
}


@pytest.fixture(params=sorted(BIJECTORS))
def case(request) -> tuple[Bijector, torch.Tensor, torch.Tensor | None]:
    """A bijector with parameters moved away from their (near-identity) initial values, in float64."""
    factory, context_dim = BIJECTORS[request.param]
    torch.manual_seed(0)
    bijector = factory().double()
    with torch.no_grad():
        for p in bijector.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(*LEADING, N, dtype=torch.float64)
    context = None if context_dim is None else torch.randn(*LEADING, context_dim, dtype=torch.float64)
    return bijector, x, context


def test_the_map_follows_its_context_and_each_vector_alone(case):
    """A conditional bijector's map changes with its context (a context that is dropped gives an unconditional
    flow: the SeRe coupling between layers is gone); and every vector is mapped on its own: changing one row of
    the batch leaves every other row's value and log-determinant as they were (no mixing across examples)."""
    bijector, x, context = case
    y, logabsdet = bijector(x, context)
    if context is not None:
        y_other, _ = bijector(x, context + 1.0)
        assert not torch.allclose(y_other, y)
    x_changed = x.clone()
    x_changed[0, 0] += 1.0
    y_changed, logabsdet_changed = bijector(x_changed, context)
    rest = torch.ones(LEADING, dtype=torch.bool)
    rest[0, 0] = False
    torch.testing.assert_close(y_changed[rest], y[rest], rtol=0, atol=1e-12)
    torch.testing.assert_close(logabsdet_changed[rest], logabsdet[rest], rtol=0, atol=1e-12)
    assert not torch.allclose(y_changed[0, 0], y[0, 0])


def test_forward_shapes_and_finite_values(case):
    bijector, x, context = case
    y, logabsdet = bijector(x, context)
    assert y.shape == x.shape and logabsdet.shape == LEADING
    assert torch.isfinite(y).all() and torch.isfinite(logabsdet).all()


def test_transform_is_the_forward_map_bit_for_bit(case):
    bijector, x, context = case
    assert torch.equal(bijector.transform(x, context), bijector(x, context)[0])


def test_inverse_undoes_forward_and_negates_its_logabsdet(case):
    bijector, x, context = case
    y, logabsdet = bijector(x, context)
    x_back, inverse_logabsdet = bijector.inverse(y, context)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_logabsdet, -logabsdet)


def test_logabsdet_is_that_of_the_dense_jacobian(case):
    bijector, x, context = case
    _, logabsdet = bijector(x, context)
    for i in range(LEADING[0]):
        for j in range(LEADING[1]):
            ctx = None if context is None else context[i, j]
            jac = jacobian(lambda v: bijector(v, ctx)[0], x[i, j])
            assert torch.linalg.slogdet(jac).logabsdet.item() == pytest.approx(logabsdet[i, j].item(), abs=1e-9)
