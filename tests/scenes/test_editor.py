"""The browser scene editor (`dreamtwin scenes edit`): edits through the authoring functions, bad edits
refused inline with the file untouched, undo, conflicts on disk, previews equal to `scenes preview`, and
the page itself driven in headless Chromium (typing a position, dragging a gizmo)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PUSH, ROOT
from tests.policy_eval.test_job import _chromium


@pytest.fixture()
def scene(tmp_path: Path) -> Path:
    path = tmp_path / "push_cube.yaml"
    shutil.copy(PUSH, path)
    return path


@pytest.fixture()
def editor(scene: Path):
    from scenes.editor import SceneEditor

    ed = SceneEditor(scene, port=_free_port(), preview=False)
    yield ed
    ed.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_edits_go_through_the_authoring_functions_and_save_keeps_comments(editor, scene):
    from scenes.authoring import edit_set_object
    from scenes.spec import load_scene_spec

    original = scene.read_text()
    assert editor.url.startswith("http://127.0.0.1:")  # loopback by default
    assert editor.edit("move", lambda d, p: edit_set_object(d, p, "cube", pos=[0.52, 0.03, 0.025]))
    assert scene.read_text() == original  # nothing written before save
    assert editor.save()
    assert load_scene_spec(scene).object("cube").pose.pos == (0.52, 0.03, 0.025)
    comments = [line for line in original.splitlines() if line.lstrip().startswith("#")]
    assert comments and all(c in scene.read_text() for c in comments)
    # undo, rename (the task's predicate follows), delete refused while the task names it
    assert editor.edit("rename", lambda d, p: edit_set_object(d, p, "cube", rename="block"))
    assert editor.spec.task.success is not None and editor.spec.task.success.params["object"] == "block"
    editor._entries_changed(select="object:block")
    editor._delete()
    assert "change the task before deleting" in editor.last_error
    assert editor.undo() and editor.spec.object("cube")


def test_bad_edits_are_reported_and_change_nothing(editor, scene, tmp_path):
    from scenes.authoring import edit_add_object, edit_set_camera, edit_set_object

    original = scene.read_text()
    assert not editor.edit("sink", lambda d, p: edit_set_object(d, p, "cube", pos=[0.5, 0.0, -0.01]))
    assert "inside the table" in editor.last_error and "objects.0.pose.pos" in editor.last_error
    assert not editor.edit("look away", lambda d, p: edit_set_camera(d, p, "side", lookat=[3.0, 6.0, 3.0]))
    assert "sees neither the table nor any object" in editor.last_error
    bad_mesh = tmp_path / "broken.obj"
    bad_mesh.write_text("this is not a mesh\n")
    assert not editor.edit("add", lambda d, p: edit_add_object(d, p, "thing", "mesh", file=str(bad_mesh)))
    assert "broken.obj" in editor.last_error
    # typed into the panel: the field springs back to the document's value
    editor.f_pos.value = (0.5, 0.0, -0.2)
    assert editor.f_pos.value == editor.spec.object("cube").pose.pos
    assert editor.history == [] and editor.save() and scene.read_text() == original
    # someone else changes the file: not overwritten silently
    assert editor.edit("move", lambda d, p: edit_set_object(d, p, "cube", pos=[0.55, 0.0, 0.025]))
    scene.write_text(original + "# edited elsewhere\n")
    assert not editor.save() and "changed on disk" in editor.last_error
    assert scene.read_text().endswith("# edited elsewhere\n")


@pytest.mark.sim
@pytest.mark.slow
def test_preview_matches_scenes_preview_of_the_saved_file(scene, tmp_path):
    from PIL import Image

    from scenes.authoring import edit_set_object
    from scenes.editor import SceneEditor

    ed = SceneEditor(scene, port=_free_port(), preview=True)
    try:
        ed._preview()  # the serve loop's job, here on the test's thread
        first = ed.previews["side"]
        assert ed.edit(
            "move", lambda d, p: edit_set_object(d, p, "cube", pos=[0.42, 0.1, 0.025], color=[0.1, 0.2, 0.9])
        )
        ed._preview()  # the built twin re-dressed, no rebuild
        assert ed.save()
        edited = ed.previews["side"]
    finally:
        ed.stop()
    assert np.abs(edited.astype(int) - first.astype(int)).mean() > 0.5  # the cube moved and turned blue
    out = tmp_path / "preview"
    r = subprocess.run(
        [sys.executable, "-m", "dreamtwin", "scenes", "preview", str(scene), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr
    sheet = np.asarray(Image.open(out / "sheet.png").convert("RGB"))
    assert sheet.shape == edited.shape
    assert np.abs(sheet.astype(int) - edited.astype(int)).mean() < 1.0


# ------------------------------------------------------------------ the page in headless Chromium
class _Page:
    """`dreamtwin scenes edit` in a subprocess and a Playwright page on it."""

    def __init__(self, scene: Path) -> None:
        from playwright.sync_api import sync_playwright

        self.port = _free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "dreamtwin", "scenes", "edit", str(scene), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "--no-preview"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        deadline = time.time() + 120
        line = ""
        while time.time() < deadline and "open http" not in line:
            line = self.proc.stdout.readline()
            assert line or self.proc.poll() is None, "editor exited"
        assert f"http://127.0.0.1:{self.port}" in line
        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(
            executable_path=_chromium(),
            args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"],
        )
        self.page = self.browser.new_page(viewport={"width": 1200, "height": 800})
        self.page.goto(f"http://127.0.0.1:{self.port}")
        self.page.locator("label", has_text="position").first.wait_for(timeout=30000)
        self.page.wait_for_timeout(2500)  # the scene's first frames

    def vector_inputs(self, label: str) -> list:
        target = self.page.locator("label", has_text=label).first.get_attribute("for")
        first = self.page.locator(f'[id="{target}"]')
        return [first, first.locator("xpath=following::input[1]"), first.locator("xpath=following::input[2]")]

    def view(self) -> np.ndarray:
        """The 3D view's pixels (left of the panel)."""
        from io import BytesIO

        from PIL import Image

        shot = Image.open(BytesIO(self.page.screenshot())).convert("RGB")
        return np.asarray(shot)[:, :840]

    def save_and_wait(self, scene: Path, before: str) -> str:
        self.page.get_by_role("button", name="save").click()
        for _ in range(100):
            if scene.read_text() != before:
                return scene.read_text()
            self.page.wait_for_timeout(100)
        raise AssertionError("the file was not saved")

    def close(self) -> None:
        self.browser.close()
        self.pw.stop()
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.mark.slow
def test_type_a_position_in_the_browser_and_save(scene):
    from scenes.spec import load_scene_spec

    original = scene.read_text()
    ui = _Page(scene)
    try:
        view = ui.view()
        assert view.std() > 10 and len(np.unique(view.reshape(-1, 3), axis=0)) > 50  # the canvas is drawn
        x = ui.vector_inputs("position")[0]
        x.fill("0.56")
        x.press("Enter")
        ui.page.wait_for_timeout(500)
        saved = ui.save_and_wait(scene, original)
    finally:
        ui.close()
    assert load_scene_spec(scene).object("cube").pose.pos == (0.56, -0.08, 0.025)
    comments = [line for line in original.splitlines() if line.lstrip().startswith("#")]
    assert all(c in saved for c in comments)


@pytest.mark.slow
def test_drag_the_gizmo_in_the_browser(scene):
    from scenes.spec import load_scene_spec

    original = scene.read_text()
    ui = _Page(scene)
    try:
        # the gizmo's z arrow (drawn over everything): its topmost pixels
        for _ in range(40):  # until the gizmo is drawn
            view = ui.view().astype(int)
            ys, xs = np.nonzero(np.abs(view - np.array([54, 142, 226])).sum(-1) < 25)
            if len(ys) > 10:
                break
            ui.page.wait_for_timeout(500)
        assert len(ys) > 10, "gizmo not found"
        top = ys.min()
        shaft = xs[ys <= top + 6]
        x0, y0 = float(np.median(shaft)), float(top + 5)
        ui.page.mouse.move(x0, y0)
        ui.page.mouse.down()
        for k in range(1, 11):
            ui.page.mouse.move(x0, y0 - 4 * k)
            ui.page.wait_for_timeout(30)
        ui.page.mouse.up()
        ui.page.wait_for_timeout(800)
        ui.save_and_wait(scene, original)
    finally:
        ui.close()
    z = load_scene_spec(scene).object("cube").pose.pos[2]
    assert z > 0.03  # lifted off the table by the z arrow
