import pytest
import torch
from torch.autograd.functional import jacobian

from srvae.flows.iaf import IAF, IAFStep

D, C = 4, 3


def perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter away from its initial value, so the test does not rely on σ ≈ 1 at init."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return module


@pytest.mark.parametrize("reverse", [False, True])
def test_step_logabsdet_is_the_log_abs_determinant_of_its_jacobian(reverse):
    step = perturbed(IAFStep(D, (16, 16), C, reverse=reverse))
    eps, context = torch.randn(D, dtype=torch.float64), torch.randn(C, dtype=torch.float64)
    step = step.double()
    z, logabsdet = step(eps, context)
    jac = jacobian(lambda e: step(e, context)[0], eps)
    assert torch.linalg.slogdet(jac).logabsdet.item() == pytest.approx(logabsdet.item(), abs=1e-10)
    assert not torch.allclose(z, eps)


def test_stack_is_invertible_and_its_logabsdets_agree():
    flow = perturbed(IAF(D, 3, (16,), C)).double()
    eps = torch.randn(5, 2, D, dtype=torch.float64)  # leading [k, B] dimensions
    context = torch.randn(5, 2, C, dtype=torch.float64)
    z, logabsdet = flow(eps, context)
    eps_back, inverse_logabsdet = flow.inverse(z, context)
    torch.testing.assert_close(eps_back, eps)
    torch.testing.assert_close(inverse_logabsdet, -logabsdet)
    jac = jacobian(lambda e: flow(e, context[0, 0])[0], eps[0, 0])
    assert torch.linalg.slogdet(jac).logabsdet.item() == pytest.approx(logabsdet[0, 0].item(), abs=1e-10)


def test_orderings_alternate_between_steps():
    flow = IAF(D, 2, (8,))
    first, second = (step.made.input_degrees for step in flow.steps)
    assert torch.equal(first, second.flip(0))


def test_unconditional_flow_and_near_identity_start():
    flow = IAF(D, 2, (8,), gate_bias=8.0)  # σ ≈ 1 − 3e-4: z ≈ ε
    eps = torch.randn(10, D)
    z, logabsdet = flow(eps)
    torch.testing.assert_close(z, eps, atol=0.05, rtol=0)
    assert logabsdet.shape == (10,)
    assert (logabsdet < 0).all()
