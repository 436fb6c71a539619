"""The shipped learned policies: BC CNN checkpoints of one training run on push_cube, saved at
different steps (the "which checkpoint is best" case). Reproduce them with

    dreamtwin datagen rollouts --config configs/datasets/push_cube_small.yaml
    dreamtwin train policy --config configs/policies/bc_cnn.yaml --data data/push_cube_small --out runs/bc_push

and copy `runs/bc_push/step-*` to `assets/policies/push_cube_bc/`.
"""

from __future__ import annotations

from pathlib import Path

from policy_eval.policies.base import register_policy

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "policies" / "push_cube_bc"

# name -> (checkpoint step, description); later checkpoints are designed to be better
BC_CHECKPOINTS: dict[str, tuple[int, str]] = {
    "bc_early": (150, "BC CNN on push_cube demonstrations, checkpoint after 150 steps"),
    "bc_mid": (600, "BC CNN on push_cube demonstrations, checkpoint after 600 steps"),
    "bc_final": (3000, "BC CNN on push_cube demonstrations, checkpoint after 3000 steps"),
}


def checkpoint_path(name: str) -> Path:
    return ASSETS / f"step-{BC_CHECKPOINTS[name][0]:06d}"


def _factory(name: str):  # noqa: ANN202
    def make(spec, seed):  # noqa: ANN001, ANN202
        from policy_eval.policies.bc import BCPolicy

        return BCPolicy.from_pretrained(checkpoint_path(name))

    return make


for _name, (_step, _desc) in BC_CHECKPOINTS.items():
    register_policy(_name, _factory(_name), privileged=False, description=_desc)

__all__ = ["BC_CHECKPOINTS", "checkpoint_path"]
