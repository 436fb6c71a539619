"""Learned worlds: action-conditioned video world models, dynamics ensembles, trajectory diffusion.

Each learned world implements the `common.types.World` protocol, so every policy-evaluation job that
runs in the digital twin runs unchanged in a learned world. Heavy modules load on first use.
"""
