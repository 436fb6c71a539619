"""Policies in, verdicts out: the Policy registry and adapters, the rollout runner, metrics, reports.

Importing this package is cheap: no simulator, renderer or model is loaded until a job asks for one.
"""

from policy_eval.metrics import wilson_interval
from policy_eval.policies import POLICIES, make_policy

__all__ = ["POLICIES", "make_policy", "wilson_interval"]
