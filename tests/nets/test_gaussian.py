import torch

from srvae.nets.gaussian import GaussianHead, precision_weighted_merge


def test_precision_weighted_merge_is_the_normalised_product_of_densities():
    mean_a, std_a, mean_b, std_b = torch.tensor([0.7]), torch.tensor([0.5]), torch.tensor([-1.2]), torch.tensor([1.3])
    mean, std = precision_weighted_merge(mean_a, std_a, mean_b, std_b)

    # brute force: normalise N(x; a) N(x; b) on a fine 1-D grid and read off its moments
    grid = torch.linspace(-10, 10, 200001, dtype=torch.float64)
    log_density = sum(torch.distributions.Normal(m.double(), s.double()).log_prob(grid) for m, s in
                      [(mean_a, std_a), (mean_b, std_b)])
    weights = torch.softmax(log_density, dim=0)
    grid_mean = (weights * grid).sum()
    grid_std = (weights * (grid - grid_mean) ** 2).sum().sqrt()
    torch.testing.assert_close(mean.double(), grid_mean.reshape(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(std.double(), grid_std.reshape(1), atol=1e-5, rtol=0)


def test_merge_with_a_much_wider_gaussian_keeps_the_narrow_one():
    mean, std = precision_weighted_merge(torch.tensor([2.0]), torch.tensor([0.1]), torch.tensor([-5.0]),
                                         torch.tensor([1e3]))
    torch.testing.assert_close(mean, torch.tensor([2.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.tensor([0.1]), atol=1e-4, rtol=0)


def test_gaussian_head_gives_positive_std_of_the_requested_size():
    head = GaussianHead(5, 3)
    mean, std = head(100 * torch.randn(7, 5))
    assert mean.shape == std.shape == (7, 3)
    assert (std > 0).all()
