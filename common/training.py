"""The one training harness: a caller's model and step loss, trained on Lightning.

    run = Run(model=net, params=list(net.parameters()), loss=step_loss, lr=warmup_cosine(1e-3, 3000),
              steps=3000, log=Log(path=out / "log.jsonl"),
              state=State(directory=out / "state", save_model=net.save_pretrained, every=500))
    finished = fit(run)  # False: stopped at run.deadline; resume with start=read_state(...)["step"]

The caller supplies the model, the parameters AdamW updates, the learning rate of each step and
`loss(step, device) -> {"loss": minimised, ...logged}`, which draws the step's batch itself. The
harness owns the rest: the optimizer (AdamW; its state saved as safetensors + JSON, never pickled),
the learning rate set before every step, gradient clipping, the JSONL loss log, the resumable
training state at chosen steps, the time limit, and the Lightning `Trainer` (accelerator, devices and
strategy pass through), and optionally an exponential moving average of the parameters (`ema`: the
average is what `after_step` sees and what the model holds when the run ends; the saved state keeps
the raw weights and the average, so a resumed run is exact with it too).

Exact resume: a step's batch and noise come from generators that are a pure function of the step
(`step_generators(seed, ..., step)`), its learning rate is a function of the step, and the
optimizer state is restored, so N steps + resume + M steps give the same weights as N + M steps.

Imports torch and Lightning only when a run starts.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import DreamTwinError, UsageError
from common.io import append_jsonl, fsync_dir, fsync_tree, read_json

if TYPE_CHECKING:
    import numpy as np
    import torch

Schedule = Callable[[int], float]
"""The learning rate of step s (s counted from 0)."""

STATE_FILE = "trainer.json"
EMA_FILE = "ema.safetensors"


class TrainingError(DreamTwinError):
    """A training run that cannot start or resume (names the directory and what is wrong)."""


# ---------------------------------------------------------------------- seeded steps
def step_generators(*key: int) -> tuple[np.random.Generator, torch.Generator]:
    """A numpy and a torch (CPU) generator, both a pure function of `key` (e.g. seed, stream, step)."""
    import numpy as np
    import torch

    seed = int(np.random.SeedSequence(list(key)).generate_state(1)[0])
    return np.random.default_rng(list(key)), torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- learning-rate schedules
def warmup_cosine(base: float, total: int, warmup: int = 0, floor: float = 0.1) -> Schedule:
    """Linear warm-up over `warmup` steps, then cosine decay to `floor * base` at step `total`."""

    def lr(step: int) -> float:
        if step < warmup:
            return base * (step + 1) / warmup
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))

    return lr


def cosine_annealing(base: float, total: int, eta_min: float) -> Schedule:
    """Cosine decay from `base` to `eta_min` over `total` steps, exactly as torch's `CosineAnnealingLR`
    stepped once per step computes it (a recursive update, so its values differ from the closed form
    in the last bits): the table is built by running that scheduler."""
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=eta_min)
    table = [float(opt.param_groups[0]["lr"])]
    for _ in range(total - 1):
        opt.step()  # no gradients: nothing changes, but the scheduler sees the order it expects
        sched.step()
        table.append(float(opt.param_groups[0]["lr"]))

    def lr(step: int) -> float:
        return table[min(step, total - 1)]

    return lr


# ---------------------------------------------------------------------- optimizer and training state
def save_optimizer(opt: torch.optim.Optimizer, directory: Path) -> None:
    """`optimizer.safetensors` (per-parameter state tensors) + `optimizer.json` (param groups)."""
    from safetensors.torch import save_file

    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, st in sd["state"].items() for k, v in st.items()}
    save_file(tensors, str(directory / "optimizer.safetensors"))
    (directory / "optimizer.json").write_text(json.dumps({"param_groups": sd["param_groups"]}))


def load_optimizer(opt: torch.optim.Optimizer, directory: Path) -> None:
    """Restore what `save_optimizer` wrote into an optimizer over the same parameters."""
    from safetensors.torch import load_file

    tensors = load_file(str(directory / "optimizer.safetensors"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    groups = json.loads((directory / "optimizer.json").read_text())["param_groups"]
    opt.load_state_dict({"state": state, "param_groups": groups})


def has_optimizer(directory: Path) -> bool:
    return (directory / "optimizer.safetensors").exists()


@dataclass(kw_only=True)
class State:
    """Where a run keeps its resumable state, and how the model is written there."""

    directory: Path  # replaced as a whole on every save: model/, optimizer.*, trainer.json
    save_model: Callable[[Path], object]  # writes the model into the given directory (`save_pretrained`)
    info: dict[str, Any] = field(default_factory=dict)  # written to trainer.json beside the step
    every: int | None = None  # also save after every `every` steps (never after the last)


def save_state(
    state: State,
    step: int,
    optimizer: torch.optim.Optimizer | None,
    ema: list[torch.Tensor] | None = None,
) -> None:
    """Write `state.directory` atomically: a new directory renamed over the old one. The model as it
    trains (raw weights), the optimizer, and the parameters' moving average when the run keeps one."""
    d = state.directory
    tmp = d.with_name(f".{d.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state.save_model(tmp / "model")
    if optimizer is not None:
        save_optimizer(optimizer, tmp)
    if ema is not None:
        from safetensors.torch import save_file

        save_file({str(i): t.detach().cpu().contiguous() for i, t in enumerate(ema)}, str(tmp / EMA_FILE))
    (tmp / STATE_FILE).write_text(json.dumps({**state.info, "step": step}))
    fsync_tree(tmp)
    old = d.with_name(f".{d.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if d.exists():
        os.rename(d, old)
    os.rename(tmp, d)
    fsync_dir(d.parent)
    shutil.rmtree(old, ignore_errors=True)


def read_state(directory: Path) -> dict[str, Any] | None:
    """The trainer.json of a saved state ({**info, "step"}), or None when there is none."""
    if not (directory / STATE_FILE).exists():
        return None
    data: dict[str, Any] = read_json(directory / STATE_FILE, TrainingError)
    return data


# ---------------------------------------------------------------------- the run
@dataclass(kw_only=True)
class Log:
    """A JSONL training log: losses after step 1, every `every` steps and the last step."""

    path: Path
    every: int = 25
    fields: dict[str, Any] = field(default_factory=dict)  # leading fields of every line (e.g. the stage)
    t0: float = field(default_factory=time.monotonic)  # `elapsed_s` counts from here

    def write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, {**self.fields, **record})

    def losses(self, step: int, total: int, losses: dict[str, float]) -> None:
        if step == 1 or step % self.every == 0 or step == total:
            self.write({"step": step, **losses, "elapsed_s": round(time.monotonic() - self.t0, 1)})


@dataclass(kw_only=True)
class Hardware:
    """Passed through to Lightning's `Trainer`."""

    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"


@dataclass(kw_only=True)
class Run:
    """One training run: steps `start`..`steps - 1` of AdamW on `params`."""

    model: torch.nn.Module  # on the accelerator and in train mode while fitting, on the CPU after
    params: list[torch.nn.Parameter]
    loss: Callable[[int, torch.device], dict[str, torch.Tensor]]  # step -> {"loss": minimised, ...}
    lr: Schedule
    steps: int
    start: int = 0
    weight_decay: float = 0.0
    grad_clip: float | None = None
    restore: Path | None = None  # a saved state whose optimizer state to load (resuming at `start`)
    log: Log | None = None
    state: State | None = None
    deadline: float | None = None  # time.monotonic() after which to save the state and stop
    after_step: Callable[[int, dict[str, float]], None] | None = None  # (steps done, that step's losses)
    hardware: Hardware = field(default_factory=Hardware)
    progress: bool = True
    ema: float | None = None  # decay of a moving average of `params` (None: none kept)


def ema_decay(ema: float, step: int) -> float:
    """The average's decay after `step` updates: `ema`, lower at first ((1 + s) / (10 + s)) so that the
    initial weights do not linger in a short run."""
    return min(ema, (1 + step) / (10 + step))


def fit(run: Run) -> bool:
    """Train `run`; True when it reached `run.steps`, False when the deadline stopped it first (its state
    saved at the step it stopped). After each step: the log, `after_step`, the periodic state, the deadline."""
    if run.deadline is not None and run.state is None:
        raise UsageError("a run with a deadline needs a State to save when it stops")
    if run.ema is not None and not 0.0 < run.ema < 1.0:
        raise UsageError(f"ema must lie in (0, 1), got {run.ema}")
    if run.start >= run.steps:
        return True
    import lightning as L

    module = _lightning_module(run)
    trainer = L.Trainer(
        max_steps=run.steps - run.start,
        max_epochs=1,
        accelerator=run.hardware.accelerator,
        devices=run.hardware.devices,
        strategy=run.hardware.strategy,
        gradient_clip_val=run.grad_clip,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=run.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    run.model.train()
    trainer.fit(module)
    if module.ema is not None and not module.stopped:
        module.swap_ema()  # the run ends holding the average
    run.model.cpu()
    return not module.stopped


def _lightning_module(run: Run) -> Any:
    import lightning as L
    import torch

    class Steps(torch.utils.data.Dataset[int]):
        """Step numbers: the real batch is drawn inside the step by the run's loss."""

        def __len__(self) -> int:
            return run.steps - run.start

        def __getitem__(self, i: int) -> int:
            return i

    class Training(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = run.model
            self.done = run.start
            self.stopped = False
            self.losses: dict[str, float] = {}
            self.ema: list[torch.Tensor] | None = None
            if run.ema is not None:
                self.ema = [p.detach().clone() for p in run.params]
                if run.restore is not None and run.start > 0:
                    self.ema = _load_ema(run.restore, run.params)

        def swap_ema(self) -> None:
            """Exchange the parameters' values with their average (twice: back as they were); the tensors
            trade places, nothing is copied."""
            assert self.ema is not None
            raw = [p.data for p in run.params]
            for p, e in zip(run.params, self.ema, strict=True):
                p.data = e
            self.ema = raw

        def configure_optimizers(self) -> torch.optim.Optimizer:
            opt = torch.optim.AdamW(run.params, lr=run.lr(run.start), weight_decay=run.weight_decay)
            if run.restore is not None:
                load_optimizer(opt, run.restore)
            return opt

        def on_train_start(self) -> None:
            if self.ema is not None:  # beside the parameters, on the accelerator
                self.ema = [e.to(p.device) for p, e in zip(run.params, self.ema, strict=True)]

        def train_dataloader(self) -> torch.utils.data.DataLoader[int]:
            return torch.utils.data.DataLoader(Steps(), batch_size=None)

        def _optimizer(self) -> torch.optim.Optimizer:
            opt: torch.optim.Optimizer = self.optimizers().optimizer  # type: ignore[union-attr]
            return opt

        def training_step(self, batch: int, batch_idx: int) -> torch.Tensor:
            for group in self._optimizer().param_groups:
                group["lr"] = run.lr(self.done)
            out = run.loss(self.done, self.device)
            self.losses = {k: float(v.detach()) for k, v in out.items()}
            self.log("loss", out["loss"].detach(), prog_bar=True)
            return out["loss"]

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            # after the optimizer step: a state saved here holds exactly `self.done` updates
            self.done += 1
            s = self.done
            if self.ema is not None:
                assert run.ema is not None
                w = 1.0 - ema_decay(run.ema, s)
                with torch.no_grad():
                    for p, e in zip(run.params, self.ema, strict=True):
                        e.lerp_(p.detach(), w)
            if run.log is not None:
                run.log.losses(s, run.steps, self.losses)
            if run.after_step is not None:
                if self.ema is not None:
                    self.swap_ema()
                try:
                    run.after_step(s, self.losses)
                finally:
                    if self.ema is not None:
                        self.swap_ema()
            st = run.state
            if st is not None and st.every and s % st.every == 0 and s < run.steps:
                save_state(st, s, self._optimizer(), self.ema)
            if run.deadline is not None and time.monotonic() > run.deadline and s < run.steps:
                assert st is not None
                save_state(st, s, self._optimizer(), self.ema)
                self.stopped = True
                self.trainer.should_stop = True

    return Training()


def _load_ema(directory: Path, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    path = directory / EMA_FILE
    if not path.exists():
        raise TrainingError(
            f"{directory}: the run keeps a moving average (ema) but the state has no {EMA_FILE}"
        )
    tensors = load_file(str(path))
    if sorted(tensors, key=int) != [str(i) for i in range(len(params))] or any(
        tensors[str(i)].shape != p.shape for i, p in enumerate(params)
    ):
        raise TrainingError(f"{path}: its tensors do not match the run's parameters")
    return [tensors[str(i)].to(p.device, p.dtype) for i, p in enumerate(params)]
