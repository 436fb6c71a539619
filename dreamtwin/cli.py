"""`dreamtwin`: thin command-line wrappers around functions that take a config.

    dreamtwin scenes validate configs/scenes/push_cube.yaml
    dreamtwin policies list
    dreamtwin eval --scene configs/scenes/push_cube.yaml --policies image_expert,image_mild --episodes 10

Every DreamTwin error is printed as one line on stderr with exit code 2 — no traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn, overload

import typer
from rich.console import Console

from common.errors import DreamTwinError

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
        "Synthetic datasets in the LeRobot v3.0 format. Example: "
        "dreamtwin datagen rollouts --scene configs/scenes/push_cube.yaml --policy expert:0.7,image_mild:0.3 "
        "--episodes 100 --seed 0 --out data/push --randomize configs/randomization/push_cube.yaml --workers 2"
    ),
    no_args_is_help=True,
)
train_app = typer.Typer(
    help=(
        "Train learned worlds. Example: "
        "dreamtwin train worldmodel --config configs/worldmodels/video_tiny.yaml --data data/push_cube_small --out runs/wm"
    ),
    no_args_is_help=True,
)
serve_app = typer.Typer(
    help=(
        "Serve a policy on openpi's websocket protocol (an openpi client, or `remote:ws://HOST:PORT` "
        "in any DreamTwin job, can drive it). Example: dreamtwin serve policy image_expert --port 8000"
    ),
    no_args_is_help=True,
)
app.add_typer(scenes_app, name="scenes")
app.add_typer(policies_app, name="policies")
app.add_typer(eval_app, name="eval")
app.add_typer(datagen_app, name="datagen")
app.add_typer(train_app, name="train")
app.add_typer(serve_app, name="serve")


def _fail(err: Exception) -> NoReturn:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Report a DreamTwinError raised inside as one line on stderr, exit code 2."""
    try:
        yield
    except DreamTwinError as e:
        _fail(e)


# ------------------------------------------------------------------ scenes
@scenes_app.command("validate")
def scenes_validate(
    path: Path = typer.Argument(..., help="SceneSpec YAML"),
    build: bool = typer.Option(True, help="also build the scene in Genesis and run one step"),
) -> None:
    """Check a scene spec (strict keys, files, predicate) and build it. Example:
    dreamtwin scenes validate configs/scenes/lift_cube.yaml"""
    from scenes.spec import load_scene_spec

    with _one_line_errors():
        spec = load_scene_spec(path)
        console.print(f"[green]spec ok[/green] {path}: scene {spec.name!r}, hash {spec.hash()}")
        if build:
            import numpy as np

            from scenes.twin import DigitalTwin

            twin = DigitalTwin(spec, render=False)
            twin.reset(seed=0)
            twin.step(np.zeros((1, twin.action_dim), np.float32))
            console.print(
                f"[green]built[/green] in {twin.build_seconds:.1f} s; success at reset: {twin.success()}"
            )


@scenes_app.command("preview")
def scenes_preview(
    path: Path = typer.Argument(..., help="SceneSpec YAML"),
    out: Path = typer.Option(Path("runs/preview"), "--out", help="output directory"),
    seed: int = typer.Option(0, help="reset seed (randomised initial state)"),
    splat: bool = typer.Option(True, help="also render with the Gaussian-splat renderer"),
) -> None:
    """Build the scene, reset it with SEED, write one PNG per camera (the spec's renderer) and
    sheet.png: every camera, Genesis and splat renderers side by side. Example:
    dreamtwin scenes preview configs/scenes/push_cube.yaml --out runs/preview"""
    import numpy as np
    from PIL import Image

    from scenes.spec import load_scene_spec

    with _one_line_errors():
        spec = load_scene_spec(path)
        if not spec.cameras:
            raise DreamTwinError(f"{path}: cameras: the scene has no cameras to preview")
        from scenes.twin import DigitalTwin, preview_images

        twin = DigitalTwin(spec, render=True)
        obs = twin.reset(seed=seed)
        out.mkdir(parents=True, exist_ok=True)
        for name, img in obs.images.items():
            Image.fromarray(img).save(out / f"{name}.png")
            console.print(f"wrote {out / f'{name}.png'} ({img.shape[1]}x{img.shape[0]}, {spec.renderer})")
        rows = list(preview_images(twin, seed, splat).values())
        width = max(r.shape[1] for r in rows)
        sheet = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
        Image.fromarray(sheet).save(out / "sheet.png")
        label = "Genesis | splat" if splat else "Genesis"
        console.print(f"wrote {out / 'sheet.png'} (rows: cameras; columns: {label})")


@scenes_app.command("edit")
def scenes_edit(
    path: Path = typer.Argument(..., help="SceneSpec YAML to edit"),
    port: int = typer.Option(8080, help="port of the editor's web page"),
    host: str = typer.Option(
        "127.0.0.1", help="interface to bind (0.0.0.0 exposes the editor to the network)"
    ),
    preview: bool = typer.Option(True, help="render every camera (Genesis | splat) after each edit"),
) -> None:
    """Edit a scene in the browser: the scene in 3D, gizmos and a panel to move, add, delete and recolour
    objects, markers and cameras, a preview of every camera, undo, save. Example:
    dreamtwin scenes edit configs/scenes/push_cube.yaml"""
    from scenes.editor import edit_scene

    with _one_line_errors():
        edit_scene(path, host=host, port=port, preview=preview)


@scenes_app.command("new")
def scenes_new(
    name: str = typer.Argument(..., help="scene name"),
    out: Path | None = typer.Option(None, "--out", help="YAML path (default configs/scenes/NAME.yaml)"),
    overwrite: bool = typer.Option(False, help="replace an existing file"),
) -> None:
    """Start a scene: robot, table and one camera. Example: dreamtwin scenes new my_table"""
    from scenes.authoring import new_scene

    path = out or Path("configs/scenes") / f"{name}.yaml"
    with _one_line_errors():
        new_scene(name, path, overwrite=overwrite)
    console.print(f"wrote {path}")


@overload
def _floats(text: str, what: str) -> list[float]: ...
@overload
def _floats(text: str | None, what: str) -> list[float] | None: ...
def _floats(text: str | None, what: str) -> list[float] | None:
    """The numbers of a comma-separated option (`--pos 0.5,0,0.1`), None when not given."""
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        _fail(DreamTwinError(f"--{what}: expected comma-separated numbers, got {text!r}"))


def _vectors(**options: str | None) -> dict[str, list[float] | None]:
    """`_floats` of each named option, keyed by its name."""
    return {name: _floats(text, name) for name, text in options.items()}


@scenes_app.command("add-object")
def scenes_add_object(
    path: Path = typer.Argument(..., help="SceneSpec YAML to edit"),
    name: str = typer.Option(..., help="object name"),
    kind: str = typer.Option("box", help="box | sphere | cylinder | mesh | splat | point_cloud"),
    size: str | None = typer.Option(None, help="box: x,y,z; sphere: r; cylinder: r,h; mesh: scale"),
    file: Path | None = typer.Option(None, help="mesh / splat / point-cloud file"),
    pos: str = typer.Option("0.5,0,0.025", help="x,y,z of the object's centre"),
    yaw: float = typer.Option(0.0, help="rotation about z, degrees"),
    mass: float = typer.Option(0.1, help="kg"),
    friction: float = typer.Option(1.0),
    color: str | None = typer.Option(None, help="r,g,b in [0, 1]"),
    fixed: bool = typer.Option(False, help="static (not simulated)"),
) -> None:
    """Add an object to a scene. Example:
    dreamtwin scenes add-object configs/scenes/my_table.yaml --name cube --kind box --size 0.05,0.05,0.05"""
    from scenes.authoring import add_object

    with _one_line_errors():
        position = _floats(pos, "pos")
        vectors = _vectors(size=size, color=color)
        mesh = str(file) if file else None
        add_object(
            path,
            name,
            kind,
            file=mesh,
            pos=position,
            yaw_deg=yaw,
            mass=mass,
            friction=friction,
            fixed=fixed,
            **vectors,
        )
    console.print(f"added {kind} {name!r} to {path}")


@scenes_app.command("set-camera")
def scenes_set_camera(
    path: Path = typer.Argument(..., help="SceneSpec YAML to edit"),
    name: str = typer.Option(..., help="camera name (added if new)"),
    pos: str | None = typer.Option(None, help="x,y,z"),
    lookat: str | None = typer.Option(None, help="x,y,z"),
    fov: float | None = typer.Option(None, help="vertical field of view, degrees"),
    resolution: str | None = typer.Option(None, help="width,height"),
    up: str | None = typer.Option(None, help="x,y,z up direction (default 0,0,1; set it for top-down views)"),
) -> None:
    """Add or change a camera. Example:
    dreamtwin scenes set-camera configs/scenes/my_table.yaml --name top --pos 0.5,0,1.2 --lookat 0.5,0,0 --up 1,0,0"""
    from scenes.authoring import set_camera

    res = _floats(resolution, "resolution")
    vectors = _vectors(pos=pos, lookat=lookat, up=up)
    with _one_line_errors():
        set_camera(path, name, fov=fov, resolution=[int(r) for r in res] if res else None, **vectors)
    console.print(f"set camera {name!r} in {path}")


@scenes_app.command("import-scan")
def scenes_import_scan(
    path: Path = typer.Argument(..., help="SceneSpec YAML to edit"),
    ply: Path = typer.Argument(..., help="coloured point cloud or 3DGS splat PLY of the real object"),
    name: str = typer.Option("scan", help="object name"),
    voxel: float = typer.Option(0.005, help="downsampling voxel for reconstruction, metres"),
    method: str = typer.Option("alpha", help="surface reconstruction: alpha | poisson"),
    fixed: bool = typer.Option(True, help="static (a table, a shelf)"),
) -> None:
    """Turn a scan into a scene object: collision mesh by open3d reconstruction (written under
    meshes/ next to the scene) + Gaussians from the scan for its appearance. Example:
    dreamtwin scenes import-scan configs/scenes/my_table.yaml scans/table.ply --name table_scan"""
    from scenes.authoring import import_scan

    with _one_line_errors():
        spec = import_scan(path, ply, name, voxel=voxel, fixed=fixed, method=method)
    obj = spec.object(name)
    appearance = obj.appearance.file if obj.appearance else None
    console.print(f"imported {ply} as {name!r}: mesh {obj.mesh}, appearance {appearance}")


def _given(**flags: object) -> dict[str, object]:
    """The command-line flags a user gave (None: not given, the config's value stands)."""
    return {k: v for k, v in flags.items() if v is not None}


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
    config: Path | None = typer.Option(None, help="job YAML (configs/eval/*.yaml); flags override it"),
    scene: str | None = typer.Option(None, help="SceneSpec YAML"),
    policies: str | None = typer.Option(None, help="comma-separated registered policy names"),
    world: str | None = typer.Option(
        None, help="world to evaluate in: twin | worldmodel:PATH | ensemble:PATH"
    ),
    episodes: int | None = typer.Option(None, help="episodes per policy"),
    seed: int | None = typer.Option(None, help="first seed; episode i uses seed + i"),
    out: str | None = typer.Option(None, help="output directory (rerun to resume)"),
    videos: bool | None = typer.Option(None, help="save one MP4 per policy"),
    ground_truth: str | None = typer.Option(None, help="eval output directory of a ground-truth (twin) run"),
    report: bool | None = typer.Option(None, help="write DIR/report.html"),
    workers: int | None = typer.Option(
        None, help="worker processes (or Ray actors), each with its own world"
    ),
    backend: str | None = typer.Option(None, help="local | ray"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="config override key=value, e.g. adaptive.half_width=0.1"
    ),
) -> None:
    """Evaluate policies in a world and print a ranked table."""
    if ctx.invoked_subcommand is not None:
        return
    from common.config import validate_model
    from policy_eval.evaluate import (
        EvalConfig,
        agreement_table,
        designed_order_note,
        load_eval_config,
        ranked_table,
        run_eval,
        trust_table,
    )

    flags = _given(
        scene=scene,
        policies=policies.split(",") if policies else None,
        world=world,
        episodes=episodes,
        seed=seed,
        out=out,
        videos=videos,
        ground_truth=ground_truth,
        report=report,
        workers=workers,
        backend=backend,
    )
    from common.config import parse_overrides, set_dotted

    with _one_line_errors():
        flags.update(parse_overrides(set_) if set_ else {})
        if config:
            cfg = load_eval_config(config, flags)
        else:
            data: dict = {}
            for key, value in flags.items():
                set_dotted(data, key, value, "--set")
            cfg = validate_model(EvalConfig, data, "command line")
        results = run_eval(cfg)
    console.print(ranked_table(results))
    designed = designed_order_note(results["ranking"])
    if designed:
        console.print(designed)
    if "metrics" in results:
        console.print(agreement_table(results["metrics"]))
    trust = trust_table(results)
    if trust is not None:
        console.print(trust)
    console.print(f"results: {Path(cfg.out) / 'results.json'}")
    if cfg.report:
        console.print(f"report: {Path(cfg.out) / 'report.html'}")


@eval_app.command("show")
def eval_show(out: Path = typer.Argument(..., help="an eval output directory")) -> None:
    """Print the ranked table of a finished (or partial) evaluation. Example: dreamtwin eval show runs/eval"""
    from common.io import read_json
    from policy_eval.evaluate import ranked_table

    with _one_line_errors():
        results = read_json(
            out / "results.json", DreamTwinError, f"not found (run `dreamtwin eval --out {out}` first)"
        )
    console.print(ranked_table(results))


# ------------------------------------------------------------------ perturb
@app.command("perturb")
def perturb(
    config: Path = typer.Option(..., help="sweep YAML (configs/perturbations/*.yaml); flags override it"),
    world: str | None = typer.Option(None, help="twin | worldmodel:PATH | ensemble:PATH"),
    policies: str | None = typer.Option(None, help="comma-separated policy names"),
    episodes: int | None = typer.Option(None, help="seeds per cell (the control and every level)"),
    seed: int | None = typer.Option(None, help="first seed; episode i uses seed + i in every cell"),
    out: str | None = typer.Option(None, help="output directory (rerun to resume)"),
    workers: int | None = typer.Option(None, help="worker processes (or Ray actors) per cell"),
    backend: str | None = typer.Option(None, help="local | ray"),
    set_: list[str] | None = typer.Option(None, "--set", help="config override key=value"),
) -> None:
    """Perturbation analysis: every policy under each level of each axis and unperturbed, on the same seeds.
    Example: dreamtwin perturb --config configs/perturbations/push_cube.yaml --out runs/perturb"""
    from common.config import parse_overrides
    from policy_eval.perturb import harm_table, load_perturb_config, run_sweep

    flags = _given(
        world=world,
        policies=policies.split(",") if policies else None,
        episodes=episodes,
        seed=seed,
        out=out,
        workers=workers,
        backend=backend,
    )
    with _one_line_errors():
        flags.update(parse_overrides(set_) if set_ else {})
        cfg = load_perturb_config(config, flags)
        results = run_sweep(cfg)
    console.print(harm_table(results))
    console.print(f"results: {Path(cfg.out) / 'results.json'}")
    console.print(f"report: {Path(cfg.out) / 'report.html'}")


# ------------------------------------------------------------------ datagen / train
@datagen_app.command("rollouts")
def datagen_rollouts(
    config: Path | None = typer.Option(None, help="job YAML (configs/datasets/*.yaml); flags override it"),
    scene: str | None = typer.Option(None, help="SceneSpec YAML"),
    policy: str | None = typer.Option(
        None, help="policy mix: name[:weight],... e.g. expert:0.7,image_mild:0.3"
    ),
    episodes: int | None = typer.Option(None, help="episodes in the finished dataset"),
    seed: int | None = typer.Option(None, help="first seed; attempt i uses seed + i"),
    out: str | None = typer.Option(None, help="dataset directory (rerun the same command to resume)"),
    randomize: str | None = typer.Option(None, help="randomisation YAML (configs/randomization/...)"),
    only_success: bool | None = typer.Option(
        None, "--only-success/--all", help="keep successful episodes only"
    ),
    only_trusted: bool | None = typer.Option(
        None, "--only-trusted", help="worldmodel: keep only episodes its trust.json trusts"
    ),
    workers: int | None = typer.Option(None, help="parallel workers, each with its own twin"),
    backend: str | None = typer.Option(None, help="local | ray"),
    ray_address: str | None = typer.Option(None, help="Ray cluster address (default: start a local Ray)"),
    lossless: bool = typer.Option(False, help="store frames exactly (H.264 RGB, qp 0) instead of AV1"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="scene override key=value, e.g. cameras.0.resolution=[64,64]"
    ),
    world: str | None = typer.Option(None, help="twin (default), ensemble:PATH or worldmodel:PATH"),
    samples: int | None = typer.Option(None, help="world model samples per step (default: the model's)"),
    sampler_steps: int | None = typer.Option(None, help="denoising steps (default: the model's)"),
) -> None:
    """Roll policies out in randomised twins and write a LeRobot v3.0 dataset (resumable).

    Example: dreamtwin datagen rollouts --scene configs/scenes/push_cube.yaml --policy expert --episodes 20
    --seed 0 --out data/push_small --randomize configs/randomization/push_cube.yaml --workers 2
    """
    from common.config import parse_overrides, validate_model
    from datagen.rollouts import RolloutJob, generate, load_job, parse_policy_mix

    with _one_line_errors():
        flags = _given(
            scene=scene,
            policies=parse_policy_mix(policy) if policy else None,
            episodes=episodes,
            seed=seed,
            out=out,
            randomize=randomize,
            only_success=only_success,
            only_trusted=only_trusted,
            workers=workers,
            backend=backend,
            ray_address=ray_address,
            scene_overrides=parse_overrides(set_) if set_ else None,
            video={"codec": "libx264rgb", "pix_fmt": "rgb24", "crf": 0} if lossless else None,
            world=world,
            samples=samples,
            sampler_steps=sampler_steps,
        )
        job = load_job(config, flags) if config else validate_model(RolloutJob, flags, "command line")
        summary = generate(job)
    _print_summary(summary)


@datagen_app.command("imagine")
def datagen_imagine(
    world: str = typer.Option(..., help="the learned world: worldmodel:PATH (or ensemble:PATH)"),
    policy: str = typer.Option(..., help="policy mix: name[:weight],... e.g. bc_mid"),
    episodes: int = typer.Option(..., help="episodes in the finished dataset"),
    seed: int = typer.Option(
        0, help="first seed; attempt i starts from the twin's initial state at seed + i"
    ),
    out: str = typer.Option(..., help="dataset directory (rerun the same command to resume)"),
    scene: str = typer.Option(
        "configs/scenes/push_cube.yaml", help="SceneSpec YAML the world was trained on"
    ),
    randomize: str | None = typer.Option(None, help="randomisation YAML for the initial states"),
    only_success: bool = typer.Option(
        True, "--only-success/--all", help="keep the episodes the imagined judge calls successful"
    ),
    only_trusted: bool = typer.Option(
        False, "--only-trusted", help="keep only episodes the world model's trust.json trusts"
    ),
    workers: int = typer.Option(1, help="parallel workers, each with its own twin and world"),
    samples: int | None = typer.Option(None, help="world model samples per step (default: the model's)"),
    sampler_steps: int | None = typer.Option(None, help="denoising steps (default: the model's)"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="scene override key=value, e.g. cameras.0.resolution=[64,64]"
    ),
) -> None:
    """Roll policies out in a learned world from the twin's initial states and keep what it imagines as a
    dataset (by default only the episodes its judge calls successful), tagged synthetic. Example:
    dreamtwin datagen imagine --world worldmodel:assets/worldmodels/push_cube_tiny --policy bc_mid
    --episodes 20 --seed 30000 --out data/imagined --set "cameras.0.resolution=[64,64]"
    """
    datagen_rollouts(
        config=None,
        scene=scene,
        policy=policy,
        episodes=episodes,
        seed=seed,
        out=out,
        randomize=randomize,
        only_success=only_success,
        only_trusted=only_trusted or None,
        workers=workers,
        backend=None,
        ray_address=None,
        lossless=False,
        set_=set_,
        world=world,
        samples=samples,
        sampler_steps=sampler_steps,
    )


@datagen_app.command("synth")
def datagen_synth(
    model: str = typer.Option(
        ..., help="trajectory diffusion checkpoint (dreamtwin train trajectory ... /model)"
    ),
    policy: str = typer.Option(
        ..., help="the guide: a policy with an action log-likelihood (a td3bc checkpoint)"
    ),
    guidance: float = typer.Option(0.0, help="PGD's guidance coefficient (0: unguided samples)"),
    episodes: int = typer.Option(..., help="episodes in the finished dataset"),
    seed: int = typer.Option(0, help="sampling seed; attempt i is window i %% batch of batch i // batch"),
    out: str = typer.Option(..., help="dataset directory (rerun the same command to resume)"),
    scene: str = typer.Option("configs/scenes/push_cube.yaml", help="SceneSpec YAML that renders the states"),
    batch: int = typer.Option(64, help="windows sampled together"),
    sampler_steps: int | None = typer.Option(None, help="Heun steps (default: the model's)"),
    workers: int = typer.Option(1, help="parallel workers, each with its own twin and sampler"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="scene override key=value, e.g. cameras.0.resolution=[64,64]"
    ),
) -> None:
    """Sample synthetic episodes with a trajectory diffusion model, guided towards a policy (Policy-Guided
    Diffusion), render them in the twin posed at the sampled states and write them as a dataset tagged
    synthetic (resumable like rollouts). Example:
    dreamtwin datagen synth --model runs/traj/model --policy runs/td3bc/step-020000 --guidance 0.1
    --episodes 200 --out data/pgd --set "cameras.0.resolution=[64,64]"
    """
    from common.config import parse_overrides, validate_model
    from datagen.rollouts import RolloutJob, generate

    with _one_line_errors():
        flags = _given(
            scene=scene,
            policies={policy: 1.0},
            episodes=episodes,
            seed=seed,
            out=out,
            workers=workers,
            scene_overrides=parse_overrides(set_) if set_ else None,
            synth={"model": model, "guidance": guidance, "batch": batch, "sampler_steps": sampler_steps},
        )
        summary = generate(validate_model(RolloutJob, flags, "command line"))
    _print_summary(summary)


@app.command("record")
def record(
    robot: Path = typer.Option(
        ..., help="robot YAML (configs/robots/*.yaml): the twin stand-in, its limits and variant"
    ),
    scene: str = typer.Option("configs/scenes/push_cube.yaml", help="SceneSpec YAML"),
    policy: str = typer.Option(..., help="policy mix: name[:weight],... e.g. image_expert,image_medium"),
    episodes: int = typer.Option(..., help="episodes to record"),
    seed: int = typer.Option(0, help="first seed; episode i uses seed + i"),
    out: str = typer.Option(..., help="dataset directory (rerun the same command to resume)"),
    workers: int = typer.Option(1, help="parallel workers, each with its own robot"),
    lossless: bool = typer.Option(False, help="store frames exactly (H.264 RGB, qp 0) instead of AV1"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="scene override key=value, e.g. cameras.0.resolution=[64,64]"
    ),
    outcome: str | None = typer.Option(
        None,
        help="robot: success from the robot's state; prompt: ask after every episode (default: the YAML's)",
    ),
) -> None:
    """Run policies on a robot behind its safety limits and record a LeRobot v3.0 dataset with outcomes.

    Example: dreamtwin record --robot configs/robots/twin_heldout.yaml --policy image_expert,image_medium
    --episodes 20 --seed 9000 --out data/robot_push --set cameras.0.resolution=[64,64]
    """
    from common.config import parse_overrides, validate_model
    from datagen.rollouts import RolloutJob, generate, parse_policy_mix
    from policy_eval.robots.twin import load_robot_config

    with _one_line_errors():
        flags = _given(
            scene=scene,
            policies=parse_policy_mix(policy),
            episodes=episodes,
            seed=seed,
            out=out,
            workers=workers,
            robot=load_robot_config(robot).model_dump(mode="json")
            | ({"outcome": outcome} if outcome else {}),
            scene_overrides=parse_overrides(set_) if set_ else None,
            video={"codec": "libx264rgb", "pix_fmt": "rgb24", "crf": 0} if lossless else None,
        )
        summary = generate(validate_model(RolloutJob, flags, "command line"))
    _print_summary(summary)


@app.command("validate")
def validate_cmd(
    data: Path = typer.Option(..., help="a dataset recorded on a robot (dreamtwin record)"),
    world: str = typer.Option(..., help="the world model to validate: worldmodel:PATH"),
    out: Path = typer.Option(Path("runs/validate"), help="output directory (results.json, report.html)"),
    horizon: int = typer.Option(10, help="open-loop horizon, steps"),
    samples: int | None = typer.Option(None, help="world model samples per step (default: the model's)"),
    sampler_steps: int | None = typer.Option(None, help="denoising steps (default: the model's)"),
) -> None:
    """Imagined against real: replay recorded episodes open loop in the world model, rerun their policies
    closed loop from the recorded first frames, and report the agreement.

    Example: dreamtwin validate --data data/robot_push --world worldmodel:assets/worldmodels/push_cube_tiny
    --out runs/validate
    """
    import json

    from datagen.windows import load_episodes
    from policy_eval.validate import validate
    from scenes.spec import SceneSpec

    with _one_line_errors():
        meta_path = data / "meta" / "dreamtwin.json"
        if not meta_path.is_file():
            raise DreamTwinError(f"{data}: no meta/dreamtwin.json (record the dataset with dreamtwin record)")
        doc = json.loads(meta_path.read_text())
        unjudged = [e for e in doc["episodes"] if e.get("success_known") is False]
        if unjudged:
            raise DreamTwinError(
                f"{meta_path}: {len(unjudged)} episodes have no outcome (the robot cannot judge success); "
                "record them with --outcome prompt"
            )
        episodes, meta = load_episodes(data, progress=True)
        results = validate(
            episodes,
            doc["episodes"],
            meta["cameras"],
            SceneSpec.model_validate(doc["scene"]),
            world,
            out,
            policy_seed=int(doc["job"].get("seed", 0)),
            horizon=horizon,
            samples=samples,
            sampler_steps=sampler_steps,
        )
    from rich.table import Table

    t = Table(title=f"{results['episodes']} recorded episodes against {world}")
    for col in ("policy", "n", "real", "imagined", "episodes agreeing"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    for p, v in results["policies"].items():
        t.add_row(
            p,
            str(v["n"]),
            f"{v['real']['success_rate']:.2f}",
            f"{v['imagined']['success_rate']:.2f}",
            f"{v['agreement']:.2f}",
        )
    console.print(t)
    for m, v in results["metrics"].items():
        console.print(f"{m}: {v['value']:.3f}" if v["value"] == v["value"] else f"{m}: undefined")
    ol = results["open_loop"]
    console.print(
        f"open loop at {results['horizon']} steps: PSNR {ol['psnr'][-1]:.1f} dB (hold the start frame "
        f"{ol['baseline_psnr'][-1]:.1f}), object error {100 * ol['object_error_m'][-1]:.2f} cm"
    )
    console.print(f"report: {out / 'report.html'}")


def _print_summary(summary: dict) -> None:
    from rich.table import Table

    t = Table(title=f"dataset {summary['out']}", show_header=False)
    if summary.get("resumed"):
        t.add_row("status", str(summary["resumed"]))
    t.add_row("episodes", str(summary["episodes"]))
    t.add_row("frames", str(summary["frames"]))
    t.add_row(
        "success rate",
        f"{summary['success_rate']:.2f} (of all attempts {summary['success_rate_of_attempts']:.2f}, "
        f"{summary['attempts']} attempts)",
    )
    t.add_row("policies", ", ".join(f"{k} {v}" for k, v in summary["policies"].items()))
    t.add_row("size", f"{summary['bytes'] / 1e6:.1f} MB")
    t.add_row("time", f"{summary['seconds']:.1f} s")
    console.print(t)


@datagen_app.command("verify")
def datagen_verify(path: Path = typer.Argument(..., help="a LeRobot v3.0 dataset directory")) -> None:
    """Check a dataset: metadata, parquet files, every episode's frames decodable, counts and stats.

    Example: dreamtwin datagen verify data/push_small
    """
    from datagen.lerobot import verify_dataset

    with _one_line_errors():
        report = verify_dataset(path)
    typer.echo(
        f"ok: {report['episodes']} episodes, {report['frames']} frames, {report['videos']} video files"
    )


@train_app.command("worldmodel")
def train_worldmodel_cmd(
    config: Path = typer.Option(..., help="model + training YAML (configs/worldmodels/*.yaml)"),
    data: Path = typer.Option(..., help="a LeRobot v3.0 dataset directory (dreamtwin datagen rollouts)"),
    out: Path = typer.Option(..., help="run directory: config.json, state/, model/, log.jsonl"),
    max_minutes: float | None = typer.Option(None, help="stop (resumably) after this many minutes"),
    resume: bool = typer.Option(False, help="continue the run in --out exactly where it stopped"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="config override key=value, e.g. train.steps=100"
    ),
) -> None:
    """Train the action-conditioned video world model: VAE, then latent dynamics (Lightning).

    Example: dreamtwin train worldmodel --config configs/worldmodels/video_tiny.yaml --data data/push_cube_small
    --out runs/wm_tiny --max-minutes 60
    """
    from common.config import parse_overrides
    from datagen.windows import load_episodes
    from worldmodels.training import train_worldmodel
    from worldmodels.video_config import load_video_config

    with _one_line_errors():
        cfg = load_video_config(config, parse_overrides(set_) if set_ else None)
        episodes, meta = load_episodes(data, cfg.cameras or None, progress=True)
        done = train_worldmodel(cfg, episodes, meta, out, max_minutes=max_minutes, resume=resume)
    if done is None:
        typer.echo(
            f"stopped at the time limit; continue with: dreamtwin train worldmodel --config {config} "
            f"--data {data} --out {out} --resume"
        )
    else:
        typer.echo(f"model saved to {done}")


@train_app.command("trajectory")
def train_trajectory_cmd(
    config: Path = typer.Option(
        ..., help="trajectory diffusion + training YAML (configs/worldmodels/trajectory.yaml)"
    ),
    data: Path = typer.Option(..., help="a LeRobot v3.0 dataset directory (dreamtwin datagen rollouts)"),
    out: Path = typer.Option(..., help="run directory: config.json, log.jsonl, model/"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="config override key=value, e.g. train.steps=500"
    ),
) -> None:
    """Train a diffusion model over state/action/success windows (EDM, for policy-guided synthesis).

    Example: dreamtwin train trajectory --config configs/worldmodels/trajectory.yaml --data data/push_cube_small
    --out runs/traj
    """
    from common.config import parse_overrides
    from datagen.windows import load_episodes
    from worldmodels.trajectory import load_trajectory_config, train_trajectory

    with _one_line_errors():
        cfg = load_trajectory_config(config, parse_overrides(set_) if set_ else None)
        episodes, meta = load_episodes(data, frames=False)
        saved = train_trajectory(cfg, episodes, meta, out)
    typer.echo(f"model saved to {saved} (sample with: dreamtwin datagen synth --model {saved} ...)")


@train_app.command("ensemble")
def train_ensemble_cmd(
    config: Path = typer.Option(..., help="ensemble + training YAML (configs/worldmodels/ensemble.yaml)"),
    data: Path = typer.Option(..., help="a LeRobot v3.0 dataset directory (dreamtwin datagen rollouts)"),
    out: Path = typer.Option(..., help="run directory: config.json, log.jsonl, model/, evaluation.json"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="config override key=value, e.g. train.steps=500"
    ),
) -> None:
    """Train a probabilistic dynamics ensemble over states (proprio + object poses) with Lightning.

    Example: dreamtwin train ensemble --config configs/worldmodels/ensemble.yaml --data data/push_cube_small
    --out runs/ensemble
    """
    import json

    from rich.table import Table

    from common.config import parse_overrides
    from datagen.windows import load_episodes
    from worldmodels.ensemble import load_ensemble_config, train_ensemble

    with _one_line_errors():
        cfg = load_ensemble_config(config, parse_overrides(set_) if set_ else None)
        episodes, meta = load_episodes(data, frames=False)
        saved = train_ensemble(cfg, episodes, meta, out)
    report = json.loads((out / "evaluation.json").read_text())
    t = Table(title=f"held-out open-loop error ({report['episodes']} episodes)")
    for col in ("horizon", "ee (cm)", "object (cm)", "uncertainty u"):
        t.add_column(col)
    for h, r in report["open_loop"].items():
        t.add_row(h, f"{r['ee_error_cm']:.2f}", f"{r['object_error_cm']:.2f}", f"{r['uncertainty']:.3f}")
    console.print(t)
    typer.echo(f"model saved to {saved} (one-step NLL {report['one_step']['nll']:.3f})")


@train_app.command("policy")
def train_policy_cmd(
    config: Path = typer.Option(..., help="policy + training YAML (configs/policies/*.yaml)"),
    data: list[Path] = typer.Option(
        ..., help="LeRobot v3.0 dataset directories (datagen rollouts / imagine); repeat to train on several"
    ),
    out: Path = typer.Option(..., help="run directory: config.json, log.jsonl, step-XXXXXX/ checkpoints"),
    set_: list[str] | None = typer.Option(None, "--set", help="config override key=value, e.g. steps=500"),
) -> None:
    """Train a policy with Lightning, by the config's `type`: `bc_cnn`, a behaviour-cloning CNN (images +
    proprio -> actions; `init: CHECKPOINT` fine-tunes a trained one), or `td3bc`, offline RL on states
    (TD3+BC, its reward from the scene of the first dataset's meta).

    Example: dreamtwin train policy --config configs/policies/bc_cnn.yaml --data data/push_cube_small --out runs/bc_push
    """
    from common.config import parse_overrides
    from datagen.windows import load_episodes
    from policy_eval.policies.base import policy_yaml_type

    with _one_line_errors():
        overrides = parse_overrides(set_) if set_ else None
        kind = policy_yaml_type(str(config))
        if kind not in (None, "bc_cnn", "td3bc"):
            raise DreamTwinError(f"{config}: type {kind!r}; train policy trains type bc_cnn or td3bc")
        if kind == "td3bc":
            from policy_eval.policies.td3bc import dataset_scene, load_td3bc_config, train_td3bc, transitions

            rl_cfg = load_td3bc_config(config, overrides)
            episodes, meta = load_episodes(data[0], progress=True, frames=False)
            for more in data[1:]:
                episodes += load_episodes(more, progress=True, frames=False)[0]
            saved = train_td3bc(rl_cfg, transitions(episodes, dataset_scene(meta, data[0])), out)
        else:
            from policy_eval.policies.bc import load_bc_config, train_policy

            cfg = load_bc_config(config, overrides)
            episodes, meta = load_episodes(data[0], cfg.cameras or None, progress=True)
            for more in data[1:]:
                extra, other = load_episodes(more, meta["cameras"], progress=True)
                if tuple(other["image_size"]) != tuple(meta["image_size"]):
                    raise DreamTwinError(
                        f"{more}: frames {other['image_size']}, but {data[0]} has {meta['image_size']}"
                    )
                episodes += extra
            saved = train_policy(cfg, episodes, meta, out)
    for p in saved:
        typer.echo(f"checkpoint: {p}  (evaluate with: dreamtwin eval --policies {p} ...)")


# ------------------------------------------------------------------ serve
@serve_app.command("policy")
def serve_policy(
    policy: str = typer.Argument(..., help="registered policy name, checkpoint directory or policy YAML"),
    scene: Path = typer.Option(
        Path("configs/scenes/push_cube.yaml"), help="SceneSpec YAML the policy acts in"
    ),
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network)"),
    port: int = typer.Option(8000, help="TCP port (0: any free port)"),
    api_key_env: str | None = typer.Option(
        None, help="environment variable holding an API key clients must send (Authorization: Api-Key ...)"
    ),
    seed: int = typer.Option(
        0, help="seed the served policy is built with (a DreamTwin client sends its own)"
    ),
    max_message_mb: float = typer.Option(32.0, help="largest request accepted, MiB"),
) -> None:
    """Serve POLICY until interrupted; GET /healthz answers 200."""
    import logging
    import os

    from policy_eval.remote import PolicyServer
    from scenes.spec import load_scene_spec

    with _one_line_errors():
        key = None
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key:
                raise DreamTwinError(f"--api-key-env: environment variable {api_key_env} is not set")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        server = PolicyServer(
            policy,
            load_scene_spec(scene),
            host=host,
            port=port,
            api_key=key,
            max_message_bytes=int(max_message_mb * 2**20),
            seed=seed,
        )
    auth = f", API key from ${api_key_env}" if key else ""
    console.print(f"serving {policy!r} for scene {server.spec.name!r} at {server.url}{auth} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.close()


def main() -> None:
    try:
        app()
    except DreamTwinError as e:  # anything that escaped a command
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
