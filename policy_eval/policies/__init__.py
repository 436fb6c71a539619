"""Policies registered by name. Registering imports nothing heavy; `make_policy` builds one.

    policy = make_policy("image_expert", spec, seed=0)
    policy.reset(seed=3); chunk = policy.act(obs)  # float32 [K, 4]
"""

from policy_eval.policies.base import POLICIES, PolicyInfo, make_policy, reset_policy

# the built-in families register themselves on import (pure numpy, cheap)
from policy_eval.policies import scripted as _scripted  # noqa: E402,F401

__all__ = ["POLICIES", "PolicyInfo", "make_policy", "reset_policy"]
