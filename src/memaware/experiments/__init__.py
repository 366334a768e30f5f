"""Experiments: each composes data, methods and the training loop, and writes JSON + PNG results."""
