import pytest
import torch

import baselines.ladder_vae as ladder_vae
from srvae.registry import build_model
from srvae.study.config import TrainSettings

SMALL = {"latents": [6, 4, 2], "hidden": [32, 16, 8]}
D = 20


def small_model() -> ladder_vae.LadderVAE:
    torch.manual_seed(0)
    return build_model("ladder_vae", SMALL, data_dim=D)


def test_interface_shapes_and_binary_samples_leave_the_mode_alone():
    model = small_model()
    scores = model.score(torch.bernoulli(torch.rand(3, D)), k=5)
    for term in (scores.log_likelihood, scores.log_prior, scores.log_posterior):
        assert term.shape == (5, 3)
    assert scores.kl.shape == (5, 3, 3)
    x = model.sample(7)
    assert x.shape == (7, D)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert model.training


def test_sampling_uses_running_statistics_even_in_training_mode():
    model = small_model()
    model.score(torch.bernoulli(torch.rand(8, D)), k=1)  # move the running statistics away from their init
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    before = [m.running_mean.clone() for m in norms]
    model.sample(50)
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before)), "sampling normalised with batch statistics"


def test_paper_setting_has_five_layers_and_mismatched_sizes_are_an_error():
    model = build_model("ladder_vae", {}, data_dim=784)
    assert model.score(torch.bernoulli(torch.rand(2, 784)), k=1).kl.shape == (1, 2, 5)
    with pytest.raises(ValueError, match="one entry per layer"):
        build_model("ladder_vae", {"latents": [4, 2], "hidden": [8]}, data_dim=D)


def test_closed_form_kl_matches_the_monte_carlo_log_ratio():
    """Σ_l KL_l is E_q[log q − log p]: the closed forms use the same Gaussians as the sampled densities."""
    model = small_model().eval()
    with torch.no_grad():
        scores = model.score(torch.bernoulli(torch.rand(2, D)), k=40000)
    monte_carlo = (scores.log_posterior - scores.log_prior).mean(0)
    closed_form = scores.kl.sum(-1).mean(0)
    torch.testing.assert_close(monte_carlo, closed_form, atol=0.05, rtol=0)


def fixed_noise(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The same "random" draw for every example, whatever the batch: N(mean, std²) at +0.3 standard deviations."""
    return mean + 0.3 * std


def log_weights_of_first_example(model, batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.log_importance_weights(batch, k=2)[:, 0]


def test_eval_mode_scores_an_example_independently_of_its_batch(monkeypatch):
    monkeypatch.setattr(ladder_vae, "reparameterise", fixed_noise)
    model = small_model()
    x = torch.bernoulli(torch.rand(1, D))
    batch_a = torch.cat([x, torch.bernoulli(torch.rand(15, D))])
    batch_b = torch.cat([x, torch.ones(15, D)])

    # training mode normalises with batch statistics: x's weight depends on its neighbours ...
    assert not torch.allclose(log_weights_of_first_example(model, batch_a), log_weights_of_first_example(model, batch_b))
    # ... evaluation mode with running statistics: it does not, and x alone scores the same
    model.eval()
    alone = log_weights_of_first_example(model, x)
    torch.testing.assert_close(log_weights_of_first_example(model, batch_a), alone)
    torch.testing.assert_close(log_weights_of_first_example(model, batch_b), alone)


def test_collected_batchnorm_statistics_are_the_averages_over_the_data():
    model = small_model().eval()
    batches = [torch.bernoulli(torch.rand(10, D)) for _ in range(3)]
    model.refresh_statistics(batches)
    first_linear, first_norm = model.up[0][0], model.up[0][1]
    with torch.no_grad():
        pre_activations = first_linear(torch.cat(batches))
    torch.testing.assert_close(first_norm.running_mean, pre_activations.mean(0))
    assert first_norm.momentum == pytest.approx(0.1)
    assert not model.training


def test_latents_per_layer_are_its_widths_bottom_first():
    """The report's KL per latent unit divides each layer's KL by these widths, in kl_per_layer's order."""
    model = build_model("ladder_vae", {"latents": [8, 4], "hidden": [32, 16]}, 784)
    assert model.latents_per_layer == [8, 4]
    assert model.elbo_terms(torch.bernoulli(torch.full((3, 784), 0.3))).kl_per_layer.shape == (3, 2)


def unshared_model() -> ladder_vae.LadderVAE:
    torch.manual_seed(0)
    return build_model("ladder_vae", {**SMALL, "share_top_down": False}, data_dim=D)


def test_unshared_top_down_adds_one_copy_of_the_top_down_blocks():
    shared, unshared = small_model(), unshared_model()
    top_down = sum(p.numel() for m in (shared.down, shared.down_heads) for p in m.parameters())
    assert unshared.num_parameters == shared.num_parameters + top_down
    assert not hasattr(shared, "inference_down")


def test_unshared_top_down_with_the_generative_weights_copied_scores_as_the_shared_model(monkeypatch):
    """The switch changes only which blocks the merge reads: with the inference blocks set to the generative ones,
    the unshared model is the shared one; with other weights, only the posterior moves, never the prior."""
    monkeypatch.setattr(ladder_vae, "reparameterise", fixed_noise)
    shared, unshared = small_model().eval(), unshared_model().eval()
    unshared.load_state_dict(shared.state_dict(), strict=False)
    unshared.inference_down.load_state_dict(shared.down.state_dict())
    unshared.inference_down_heads.load_state_dict(shared.down_heads.state_dict())
    x = torch.bernoulli(torch.rand(4, D))
    with torch.no_grad():
        a, b = shared.score(x, 2), unshared.score(x, 2)
        torch.testing.assert_close(b.log_posterior, a.log_posterior)
        torch.testing.assert_close(b.kl, a.kl)
        for p in unshared.inference_down_heads.parameters():
            p.add_(0.5)
        c = unshared.score(x, 2)
    assert not torch.allclose(c.log_posterior, a.log_posterior)
    torch.testing.assert_close(c.kl[..., -1], a.kl[..., -1])  # the top layer has no top-down term


def test_unshared_closed_form_kl_matches_the_monte_carlo_log_ratio():
    model = unshared_model().eval()
    with torch.no_grad():
        scores = model.score(torch.bernoulli(torch.rand(2, D)), k=40000)
    torch.testing.assert_close((scores.log_posterior - scores.log_prior).mean(0), scores.kl.sum(-1).mean(0),
                               atol=0.05, rtol=0)


def test_training_step_caps_the_norm_then_clips_each_entry_as_the_reference_code():
    """``train.grad_clip`` then ``train.grad_clip_value``: on a gradient (10, 0.1) the norm cap 1 gives
    (≈1, ≈0.01) and the entry clip 0.9 then (0.9, ≈0.01); the other order would leave 0.1."""
    from srvae.study.run.step import apply_gradients

    holder = torch.nn.Module()
    holder.w = torch.nn.Parameter(torch.zeros(2))
    optimiser = torch.optim.SGD(holder.parameters(), lr=1.0)
    apply_gradients(holder, optimiser, (holder.w * torch.tensor([10.0, 0.1])).sum(),
                    TrainSettings(grad_clip=1.0, grad_clip_value=0.9))
    capped = torch.tensor([10.0, 0.1]) / torch.tensor([10.0, 0.1]).norm()
    torch.testing.assert_close(-holder.w.detach(), torch.stack([torch.tensor(0.9), capped[1]]), rtol=1e-4, atol=0)
