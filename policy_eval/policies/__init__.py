"""Policies registered by name. Registering imports nothing heavy; `make_policy` builds one.

policy = make_policy("image_expert", spec, seed=0)       # a registered name
policy = make_policy("runs/bc_push/step-002000", spec)    # or a trained checkpoint directory
policy.reset(seed=3); chunk = policy.act(obs)  # float32 [K, 4]
"""

# the built-in families register themselves on import (pure numpy, cheap)
from policy_eval.policies import scripted as _scripted  # noqa: E402,F401
from policy_eval.policies import zoo as _zoo  # noqa: E402,F401
from policy_eval.policies.base import POLICIES, PolicyInfo, make_policy, policy_info

__all__ = ["POLICIES", "PolicyInfo", "make_policy", "policy_info"]
