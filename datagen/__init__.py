"""Datasets out: rollouts with domain randomisation, policy-guided diffusion, imagined successes,
LeRobot-format read/write. May import every other package; heavy modules load on first use.
"""
