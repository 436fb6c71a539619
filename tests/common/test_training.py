"""The training harness: schedules, seeded steps, optimizer state, logging and exact resume on a toy model."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from common.errors import UsageError
from common.training import (
    Hardware,
    Log,
    Run,
    State,
    TrainingError,
    cosine_annealing,
    ema_decay,
    fit,
    load_optimizer,
    read_state,
    save_optimizer,
    step_generators,
    warmup_cosine,
)
from tests.test_imports import _heavy_modules_after


def test_importing_the_harness_loads_neither_torch_nor_lightning():
    assert _heavy_modules_after("common.training", ("torch", "lightning")) == []


def test_cosine_annealing_is_torchs_scheduler_stepped_once_per_step():
    base, total = 1e-3, 300
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=base)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=base * 0.05)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lr = cosine_annealing(base, total, eta_min=base * 0.05)
    assert [lr(s) for s in range(total)] == seen  # bit for bit, not just close
    assert lr(0) == base and math.isclose(lr(total - 1), base * 0.05, rel_tol=1e-3)


def test_warmup_cosine_rises_linearly_then_decays_to_its_floor():
    lr = warmup_cosine(1.0, 100, warmup=10, floor=0.1)
    assert [lr(s) for s in range(3)] == [0.1, 0.2, 0.3]
    assert lr(9) == 1.0 and lr(10) == 1.0
    assert all(lr(s) > lr(s + 1) for s in range(10, 99))
    assert math.isclose(lr(100), 0.1) and lr(1000) == lr(100)
    assert warmup_cosine(2.0, 50)(0) == 2.0  # no warm-up: starts at the base rate


def test_step_generators_are_a_pure_function_of_the_key():
    (r1, g1), (r2, g2), (r3, g3) = (
        step_generators(0, 1, 5),
        step_generators(0, 1, 5),
        step_generators(0, 1, 6),
    )
    assert r1.integers(0, 1000, 8).tolist() == r2.integers(0, 1000, 8).tolist()
    a, b, c = (torch.randn(8, generator=g) for g in (g1, g2, g3))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert r3.integers(0, 1000, 8).tolist() != step_generators(0, 1, 5)[0].integers(0, 1000, 8).tolist()


def test_optimizer_state_round_trips_exactly(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.01)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 3)).square().sum().backward()
        opt.step()
    save_optimizer(opt, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimizer.json", "optimizer.safetensors"]
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(net.state_dict())
    opt2 = torch.optim.AdamW(twin.parameters(), lr=0.5)
    load_optimizer(opt2, tmp_path)
    x = torch.randn(4, 3)
    for n, o in ((net, opt), (twin, opt2)):
        o.zero_grad()
        n(x).square().sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), twin.parameters(), strict=True))


# ---------------------------------------------------------------------- fit on a toy regression
STEPS = 6


def _toy_run(model: torch.nn.Linear, out: Path, **kw) -> Run:
    """Linear regression onto a fixed map; step s's batch comes from step_generators(0, s) only."""
    target = torch.arange(8.0).view(2, 4) / 8

    def loss(step: int, device: torch.device) -> dict[str, torch.Tensor]:
        _, g = step_generators(0, step)
        x = torch.randn(16, 4, generator=g).to(device)
        err = model(x) - x @ target.T.to(device)
        return {"loss": err.square().mean(), "mae": err.abs().mean().detach()}

    def save_model(d: Path) -> None:
        d.mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))

    return Run(
        model=model,
        params=list(model.parameters()),
        loss=loss,
        lr=warmup_cosine(0.05, STEPS, warmup=2),
        steps=STEPS,
        weight_decay=0.01,
        grad_clip=0.5,
        log=Log(path=out / "log.jsonl", every=4, fields={"run": "toy"}),
        state=State(directory=out / "state", save_model=save_model, info={"phase": "fit"}, every=4),
        hardware=Hardware(accelerator="cpu"),
        progress=False,
        **kw,
    )


def _losses(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


def test_a_run_stopped_and_resumed_after_every_step_equals_an_uninterrupted_one(tmp_path):
    torch.manual_seed(0)
    straight = torch.nn.Linear(4, 2)
    first = {k: v.clone() for k, v in straight.state_dict().items()}
    after: list[int] = []
    assert fit(_toy_run(straight, tmp_path / "a", after_step=lambda s, losses: after.append(s)))
    assert after == list(range(1, STEPS + 1))
    assert [r["step"] for r in _losses(tmp_path / "a")] == [1, 4, STEPS]  # first, every 4th, last
    assert all(r["run"] == "toy" and {"loss", "mae"} <= set(r) for r in _losses(tmp_path / "a"))
    assert read_state(tmp_path / "a/state") == {"phase": "fit", "step": 4}  # every 4 steps, not the last

    out = tmp_path / "b"
    resumed = torch.nn.Linear(4, 2)
    resumed.load_state_dict(first)
    assert not fit(_toy_run(resumed, out, deadline=0.0))  # past its deadline: stops after one step
    for _ in range(STEPS):
        st = read_state(out / "state")
        assert st is not None
        model = torch.nn.Linear(4, 2)
        model.load_state_dict(load_file(str(out / "state/model/model.safetensors")))
        if fit(_toy_run(model, out, start=st["step"], restore=out / "state", deadline=0.0)):
            break
    assert st["step"] == STEPS - 1
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), model.parameters(), strict=True))
    assert _losses(out) == _losses(tmp_path / "a")


def test_a_run_already_at_its_end_does_nothing_and_a_deadline_needs_a_state(tmp_path):
    model = torch.nn.Linear(4, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert fit(_toy_run(model, tmp_path, start=STEPS))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    run = _toy_run(model, tmp_path, deadline=time.monotonic() + 60)
    run.state = None
    with pytest.raises(UsageError, match="deadline needs a State"):
        fit(run)


def test_a_moving_average_is_what_validation_sees_and_the_run_ends_with(tmp_path):
    torch.manual_seed(0)
    raw = torch.nn.Linear(4, 2)
    first = {k: v.clone() for k, v in raw.state_dict().items()}
    steps: list[list[torch.Tensor]] = []  # the raw weights after every step
    assert fit(
        _toy_run(
            raw,
            tmp_path / "raw",
            after_step=lambda s, _: steps.append([p.detach().clone() for p in raw.parameters()]),
        )
    )
    expect = [p.clone() for p in first.values()]  # Linear: weight, bias, as parameters() orders them
    for s, w in enumerate(steps, start=1):
        d = ema_decay(0.9, s)
        expect = [d * e + (1 - d) * p for e, p in zip(expect, w, strict=True)]

    averaged = torch.nn.Linear(4, 2)
    averaged.load_state_dict(first)
    seen: list[torch.Tensor] = []
    assert fit(
        _toy_run(
            averaged,
            tmp_path / "ema",
            ema=0.9,
            after_step=lambda s, _: seen.append(averaged.weight.detach().clone()),
        )
    )
    assert ema_decay(0.9, 1) < ema_decay(0.9, 100) == 0.9
    for a, b in zip(averaged.parameters(), expect, strict=True):
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=1e-6)
    assert not torch.allclose(averaged.weight, raw.weight)  # the average is not the last step
    torch.testing.assert_close(seen[-1], averaged.weight.detach(), rtol=0, atol=1e-6)
    assert _losses(tmp_path / "ema") == _losses(tmp_path / "raw")  # training itself is unchanged


def test_a_run_with_a_moving_average_resumes_exactly(tmp_path):
    torch.manual_seed(1)
    straight = torch.nn.Linear(4, 2)
    first = {k: v.clone() for k, v in straight.state_dict().items()}
    assert fit(_toy_run(straight, tmp_path / "a", ema=0.8))
    out = tmp_path / "b"
    model = torch.nn.Linear(4, 2)
    model.load_state_dict(first)
    assert not fit(_toy_run(model, out, ema=0.8, deadline=0.0))
    while True:
        st = read_state(out / "state")
        assert st is not None and (out / "state/ema.safetensors").exists()
        model = torch.nn.Linear(4, 2)
        model.load_state_dict(load_file(str(out / "state/model/model.safetensors")))
        if fit(_toy_run(model, out, ema=0.8, start=st["step"], restore=out / "state", deadline=0.0)):
            break
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), model.parameters(), strict=True))
    (out / "state/ema.safetensors").unlink()
    with pytest.raises(TrainingError, match="moving average"):
        fit(_toy_run(torch.nn.Linear(4, 2), out, ema=0.8, start=st["step"], restore=out / "state"))
    with pytest.raises(UsageError, match="ema must lie"):
        fit(_toy_run(torch.nn.Linear(4, 2), out, ema=1.0))
