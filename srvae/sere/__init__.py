"""The SeRe-VAE family (Apostolopoulou et al. 2020): the block partition of the image, the amortised affine
bijector, the stochastic and data layers, SeRe-VAE itself and the Self-Reflective IAF."""
