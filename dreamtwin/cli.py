"""`dreamtwin`: thin command-line wrappers around functions that take a config.

    dreamtwin scenes validate configs/scenes/push_cube.yaml
    dreamtwin policies list
    dreamtwin eval --scene configs/scenes/push_cube.yaml --policies image_expert,image_mild --episodes 10

Every DreamTwin error is printed as one line on stderr with exit code 2 — no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from scenes.errors import DreamTwinError

console = Console()
app = typer.Typer(
    help="DreamTwin: evaluate and train robot policies in imagined worlds (digital twins, world models).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

scenes_app = typer.Typer(
    help="Author and check scenes. Example: dreamtwin scenes validate configs/scenes/push_cube.yaml",
    no_args_is_help=True,
)
policies_app = typer.Typer(help="Registered policies. Example: dreamtwin policies list", no_args_is_help=True)
eval_app = typer.Typer(
    help=(
        "Offline policy evaluation: every policy on the same seeds, success rates with 95% intervals, "
        "resumable. Example: dreamtwin eval --scene configs/scenes/push_cube.yaml "
        "--policies image_expert,image_mild,image_severe --episodes 10 --seed 0 --out runs/eval"
    ),
    invoke_without_command=True,
)
datagen_app = typer.Typer(
    help=(
        "Synthetic dataset generation in the LeRobot format. Example (once rollouts land): "
        "dreamtwin datagen rollouts --scene configs/scenes/push_cube.yaml --policy expert --episodes 100 "
        "--out data/push"
    ),
    invoke_without_command=True,
)
train_app = typer.Typer(
    help=(
        "Train learned worlds. Example (once the video world model lands): "
        "dreamtwin train worldmodel --config configs/worldmodels/video_tiny.yaml --data data/push --out runs/wm"
    ),
    invoke_without_command=True,
)
app.add_typer(scenes_app, name="scenes")
app.add_typer(policies_app, name="policies")
app.add_typer(eval_app, name="eval")
app.add_typer(datagen_app, name="datagen")
app.add_typer(train_app, name="train")


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


# ------------------------------------------------------------------ scenes
@scenes_app.command("validate")
def scenes_validate(
    path: Path = typer.Argument(..., help="SceneSpec YAML"),
    build: bool = typer.Option(True, help="also build the scene in Genesis and run one step"),
) -> None:
    """Check a scene spec (strict keys, files, predicate) and build it. Example:
    dreamtwin scenes validate configs/scenes/lift_cube.yaml"""
    from scenes.spec import load_scene_spec

    try:
        spec = load_scene_spec(path)
        console.print(f"[green]spec ok[/green] {path}: scene {spec.name!r}, hash {spec.hash()}")
        if build:
            import numpy as np

            from scenes.twin import DigitalTwin

            twin = DigitalTwin(spec, render=False)
            twin.reset(seed=0)
            twin.step(np.zeros((1, twin.action_dim), np.float32))
            console.print(f"[green]built[/green] in {twin.build_seconds:.1f} s; success at reset: {twin.success()}")
    except DreamTwinError as e:
        _fail(e)


@scenes_app.command("preview")
def scenes_preview(
    path: Path = typer.Argument(..., help="SceneSpec YAML"),
    out: Path = typer.Option(Path("runs/preview"), "--out", help="directory for one PNG per camera"),
    seed: int = typer.Option(0, help="reset seed (randomised initial state)"),
) -> None:
    """Build the scene, reset it with SEED and write one PNG per camera. Example:
    dreamtwin scenes preview configs/scenes/push_cube.yaml --out runs/preview"""
    from PIL import Image

    from scenes.spec import load_scene_spec

    try:
        spec = load_scene_spec(path)
        if not spec.cameras:
            raise DreamTwinError(f"{path}: cameras: the scene has no cameras to preview")
        from scenes.twin import DigitalTwin

        twin = DigitalTwin(spec, render=True)
        obs = twin.reset(seed=seed)
        out.mkdir(parents=True, exist_ok=True)
        for name, img in obs.images.items():
            Image.fromarray(img).save(out / f"{name}.png")
            console.print(f"wrote {out / f'{name}.png'} ({img.shape[1]}x{img.shape[0]})")
    except DreamTwinError as e:
        _fail(e)


# ------------------------------------------------------------------ policies
@policies_app.command("list")
def policies_list() -> None:
    """Print every registered policy with a one-line description."""
    from policy_eval.policies import POLICIES

    for name in POLICIES.names():
        info = POLICIES.get(name)
        tag = " [privileged]" if info.privileged else ""
        typer.echo(f"{name:<16} {info.description}{tag}")


# ------------------------------------------------------------------ eval
@eval_app.callback()
def eval_run(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, help="job YAML (configs/eval/*.yaml); flags override it"),
    scene: Optional[str] = typer.Option(None, help="SceneSpec YAML"),
    policies: Optional[str] = typer.Option(None, help="comma-separated registered policy names"),
    world: Optional[str] = typer.Option(None, help="world to evaluate in: twin"),
    episodes: Optional[int] = typer.Option(None, help="episodes per policy"),
    seed: Optional[int] = typer.Option(None, help="first seed; episode i uses seed + i"),
    out: Optional[str] = typer.Option(None, help="output directory (rerun to resume)"),
    videos: Optional[bool] = typer.Option(None, help="save one MP4 per policy"),
) -> None:
    """Evaluate policies in a world and print a ranked table."""
    if ctx.invoked_subcommand is not None:
        return
    from policy_eval.evaluate import EvalConfig, designed_order_note, load_eval_config, ranked_table, run_eval
    from scenes.config import validate_model

    flags = {
        "scene": scene, "policies": policies.split(",") if policies else None, "world": world,
        "episodes": episodes, "seed": seed, "out": out, "videos": videos,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    try:
        cfg = (
            load_eval_config(config, flags) if config
            else validate_model(EvalConfig, flags, "command line")
        )
        results = run_eval(cfg)
    except DreamTwinError as e:
        _fail(e)
        return
    console.print(ranked_table(results))
    designed = designed_order_note(results["ranking"])
    if designed:
        console.print(designed)
    console.print(f"results: {Path(cfg.out) / 'results.json'}")


@eval_app.command("show")
def eval_show(out: Path = typer.Argument(..., help="an eval output directory")) -> None:
    """Print the ranked table of a finished (or partial) evaluation. Example: dreamtwin eval show runs/eval"""
    from policy_eval.evaluate import ranked_table

    path = out / "results.json"
    if not path.exists():
        _fail(DreamTwinError(f"{path}: not found (run `dreamtwin eval --out {out}` first)"))
    console.print(ranked_table(json.loads(path.read_text())))


# ------------------------------------------------------------------ datagen / train
@datagen_app.callback()
def datagen_main(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        typer.echo("\nNo dataset commands are installed in this version yet (LeRobot-format rollouts come next).")


@train_app.callback()
def train_main(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        typer.echo("\nNo training commands are installed in this version yet (the video world model comes next).")


def main() -> None:
    try:
        app()
    except DreamTwinError as e:  # anything that escaped a command
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
