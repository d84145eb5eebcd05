"""The ResNet pieces: weight normalisation and its data-dependent initialisation, the residual blocks' resampling,
the image geometry and the decoder's band of rows."""

import pytest
import torch

from srvae.nets.resnet import (
    Decoder,
    Encoder,
    ImageGeometry,
    ResidualBlock,
    WeightNormed,
    WNConv2d,
    WNLinear,
    WNUpsample2d,
    data_dependent_init,
)
from srvae.sere.conv_sere_vae import ConvSeReVAE, ConvSeReVAEConfig

D = 144  # a 12 × 12 image: padded to 16, halved to 8 and 4
SMALL = dict(layers=3, latents=3, channels=4, depths=(2, 2), prior_hidden=(8,), posterior_hidden=(8,), bijector_hidden=(8,))


@pytest.mark.parametrize("layer, x", [
    (WNLinear(5, 3), torch.randn(7, 2, 5)),
    (WNConv2d(2, 3, 5, stride=2), torch.randn(4, 2, 8, 8)),
    (WNUpsample2d(2, 3).conv, torch.randn(4, 2, 8, 8)),
])
def test_each_output_units_weight_has_norm_g(layer, x):
    with torch.no_grad():
        layer.g.copy_(torch.rand_like(layer.g) + 0.5)
    w = layer.weight()
    norms = torch.linalg.vector_norm(w.flatten(1), dim=1)
    torch.testing.assert_close(norms, layer.g)
    assert layer(x).shape[1 if x.ndim == 4 else -1] == len(layer.g)


def test_resampling_blocks_halve_and_double_the_resolution_around_a_scaled_residual():
    h = torch.randn(2, 4, 8, 8)
    assert ResidualBlock(4, "down")(h).shape == (2, 4, 4, 4)
    assert ResidualBlock(4, "up")(h).shape == (2, 4, 16, 16)
    block = ResidualBlock(4)
    with torch.no_grad():
        block.conv2.g.zero_()
        block.conv2.b.zero_()
    torch.testing.assert_close(block(h), h)  # a silent branch leaves the identity
    up = ResidualBlock(4, "up")
    with torch.no_grad():
        up.conv2.conv.g.zero_()
        up.conv2.conv.b.zero_()
    torch.testing.assert_close(up(h)[..., ::2, ::2], h)  # nearest-neighbour upsampling on the skip path
    with pytest.raises(ValueError, match="resample must be"):
        ResidualBlock(4, "sideways")


def test_geometry_pads_by_two_and_to_a_multiple_of_four():
    mnist = ImageGeometry(784)
    assert (mnist.side, mnist.padded, mnist.before, mnist.low) == (28, 32, 2, 8)
    with pytest.raises(ValueError, match="square images; 20 pixels"):
        ImageGeometry(20)


@pytest.mark.parametrize("pixels", [slice(0, 79), slice(79, 158), slice(700, 784), slice(None)])
def test_band_positions_point_at_the_pixels_in_the_padded_image(pixels):
    geometry = ImageGeometry(784)
    x = torch.rand(3, 784)
    top, bottom = geometry.band(pixels)
    assert top % 4 == 0 and bottom % 4 == 0
    band = geometry.to_padded_image(x)[:, 0, top:bottom].flatten(1)
    torch.testing.assert_close(band[:, geometry.positions(pixels, top)], x[:, pixels])


def test_decoder_of_a_block_returns_its_logits_and_starts_at_its_marginal():
    mean = torch.rand(40) * 0.8 + 0.1
    decoder = Decoder(D, latents=3, channels=4, depths=(1, 1), pixels=slice(60, 100), pixel_mean=mean)
    z = torch.randn(5, 2, 3)
    assert decoder(z).shape == (5, 2, 40)
    with data_dependent_init(decoder):
        decoder(z)
    # the output layer starts at sd 0.1: the logits spread little around those of the pixel means
    assert (decoder(z) - torch.logit(mean)).std() < 0.2
    extra = torch.randn(2, 4, 8, 8)  # half-resolution maps of the whole padded image, one per example
    assert not torch.allclose(decoder(z, extra), decoder(z))


def small_model(seed: int = 0) -> ConvSeReVAE:
    torch.manual_seed(seed)
    return ConvSeReVAE(ConvSeReVAEConfig(**SMALL), D, data_mean=torch.full((D,), 0.2))


def batch(seed: int = 0, n: int = 32) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, D), 0.2), generator=torch.Generator().manual_seed(seed))


def test_data_dependent_init_gives_unit_variance_pre_activations_on_the_init_batch():
    model, x = small_model(), batch()
    layers = [m for m in model.modules() if isinstance(m, WeightNormed)]
    assert layers and not any(m.initialised for m in layers)
    torch.manual_seed(1)
    model.initialise(x)
    assert all(m.initialised for m in layers)
    outputs = {}
    for m in layers:
        m.register_forward_hook(lambda m, _, y: outputs.setdefault(m, y))
    torch.manual_seed(1)  # the same posterior draws as during the initialisation: the same batch everywhere
    with torch.no_grad():
        model.score(x, 1)
    assert len(outputs) == len(layers)
    for m, y in outputs.items():
        unit = m.output_axis % y.ndim
        per_unit = y.transpose(0, unit).flatten(1)
        torch.testing.assert_close(per_unit.mean(1), torch.zeros(len(per_unit)), atol=1e-4, rtol=0)
        torch.testing.assert_close(per_unit.std(1), torch.full((len(per_unit),), m.init_scale), atol=1e-4, rtol=0)
    assert {m.init_scale for m in layers} == {1.0, 0.1}  # hidden layers at 1, the output layers at 0.1


def test_initialisation_runs_once_and_a_restored_model_is_not_initialised_again():
    model, x = small_model(), batch()
    model.initialise(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.initialise(batch(seed=2))  # another batch: nothing moves, every layer is initialised already
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    restored = small_model(seed=3)
    restored.load_state_dict(state)  # as a resumed run does
    restored.initialise(batch(seed=4))
    assert all(torch.equal(state[k], v) for k, v in restored.state_dict().items())


def test_outside_the_initialisation_forward_passes_change_no_weight():
    model, x = small_model(), batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    model.score(x, 2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_encoder_features_have_the_documented_size():
    encoder = Encoder(784, channels=3, depths=(2, 2))
    assert encoder(batch(n=2).new_zeros(2, 784)).shape == (2, encoder.out_dim) and encoder.out_dim == 3 * 8 * 8
