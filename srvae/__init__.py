"""srvae: a reproducibility benchmark suite for the Self-Reflective Variational Autoencoder.

Apostolopoulou, Rosenfeld & Dubrawski, "Self-Reflective Variational Autoencoder", arXiv:2007.05166.
"""

__version__ = "0.1.0"
