import torch

from srvae.flows.iaf import IAF
from srvae.registry import build_model
from srvae.sere.sere_vae import SeReVAE

PARAMS = {"layers": 3, "latents": 4, "encoder_hidden": [32], "prior_hidden": [16], "posterior_hidden": [16],
          "bijector_hidden": [16], "data_hidden": [16], "iaf_steps": 2}


def model():
    torch.manual_seed(0)
    return build_model("sr_iaf", PARAMS, 784)


def test_is_sere_vae_with_standard_normal_priors_and_conditional_iaf_bijectors():
    m = model()
    assert isinstance(m, SeReVAE)
    for l, bijector in enumerate(m.generator.bijectors):
        mean, std = m.generator.priors.layer(l, torch.randn(5, 4) if l else None)
        assert torch.equal(mean, torch.zeros(4)) and torch.equal(std, torch.ones(4))
        assert isinstance(bijector, IAF) and len(bijector.steps) == 2
    assert not list(m.generator.priors.parameters())  # the standard normal has nothing to learn
    # the same bijector objects serve the generator and the inference network
    assert all(a is b for a, b in zip(m.generator.bijectors, m.inference.bijectors))


def test_standard_normal_prior_as_the_posteriors_first_estimate():
    from srvae.distributions import mean_and_std

    torch.manual_seed(0)
    m = build_model("sr_iaf", {**PARAMS, "posterior_first": "prior"}, 784)
    mean, std = mean_and_std(m.generator.priors.raw(0))
    torch.testing.assert_close(mean, torch.zeros(4))
    torch.testing.assert_close(std, torch.ones(4))
    s = m.score(torch.bernoulli(torch.full((3, 784), 0.2)), 2)
    assert torch.isfinite(s.log_weights).all()


def test_later_bijectors_depend_on_the_previous_code():
    bijector = model().generator.bijectors[1]
    for p in bijector.parameters():  # move away from the near-identity initialisation
        p.data.normal_(0, 0.3)
    eps = torch.randn(6, 4)
    z_a, _ = bijector(eps, torch.randn(6, 4))
    z_b, _ = bijector(eps, torch.randn(6, 4))
    assert not torch.allclose(z_a, z_b)


def test_prior_term_is_the_standard_normal_density_of_the_inverted_codes():
    """log p(ε) of the score is log N(f⁻¹(z_l; z_{l-1}); 0, I) summed over layers: the IAF inverse recovers
    the base latents that were drawn, and the prior in ε-space is the standard normal."""
    m = model()
    for p in m.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.bernoulli(torch.full((3, 784), 0.2))
    with torch.no_grad():
        codes, log_p, _, kl = m.posterior_pass(x, 2)
        z_prev, expected = None, torch.zeros(2, 3)
        for l, z in enumerate(codes):
            eps, _ = m.generator.bijectors[l].inverse(z, z_prev)
            expected += torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum(-1)
            z_prev = z
    assert torch.allclose(log_p, expected, atol=1e-4)
    assert kl.shape == (2, 3, 3) and (kl >= 0).all()


def test_short_training_lowers_the_validation_nll(tmp_path):
    from srvae.study.config import TrainSettings
    from srvae.study.run.evaluate import iw_log_likelihood
    from srvae.study.run.train import train

    from ..conftest import tiny_dataset

    data = tiny_dataset()
    m = model()
    before = iw_log_likelihood(m, data.valid, k=10, k_chunk=10, batch_size=100).nll
    train(m, data, TrainSettings(epochs=4, batch_size=50, lr=3e-3), 0, tmp_path / "c.pt", log=lambda msg: None)
    assert iw_log_likelihood(m, data.valid, k=10, k_chunk=10, batch_size=100).nll < before - 10
