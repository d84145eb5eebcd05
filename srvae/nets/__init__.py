"""Reusable network pieces: MLP builders and Gaussian heads."""
