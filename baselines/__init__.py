"""Baseline models of the SeRe-VAE study, built on srvae's shared pieces and its model interface."""
