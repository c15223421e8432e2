"""The README's ```python examples, run as written on the simulated microscope.

Why this exists: the README is where a microscopist copies code from, and nothing executed its examples, so they
could (and did) use names they never defined or drift away from the API. Each test here takes one block's text
straight out of README.md, runs it in a temporary working directory with a small, documented namespace of the
names a reader would already have in hand (a core, a ``show`` function, some frames), and checks what the block
produced. Editing a block into something that fails, or adding a block without a test, fails this file.

What is made small is the microscope and the settings, never the example: a 32x32 / 64x64 simulated camera, a
``session.toml`` in the test's own settings folder (``$LIVEDENOISE_CONFIG_DIR``, the one the block's own
``load_session_settings()`` reads) and short fine-tuning defaults.
"""
from __future__ import annotations

import functools
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import CodeType
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: The first line of each README block, which names it for its test below (a new block needs a new test).
BLOCK_KEYS = {
    "live_session": "from livedenoise.acquisition.session import LiveSession",
    "attach": "from livedenoise.attach import PycromanagerDenoiser, MDADenoiser",
    "batch": "from livedenoise.batch import denoise_dataset",
    "simulated_core": "from simulators.core import start_simulated_core, light_power_event",
    "finetune": "from livedenoise.checkpoint import load_backbone, load_checkpoint",
}

_OPEN = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*python\s*$")


def python_blocks(markdown: str) -> list[tuple[int, str]]:
    """``(first code line number, code)`` of every fenced ```python block, in order (CommonMark fences, unindented).

    A block ends at a fence of the same character at least as long as the opening one; an unclosed block is an
    error rather than silently running to the end of the file.
    """
    blocks: list[tuple[int, str]] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        match = _OPEN.match(lines[i])
        i += 1
        if match is None:
            continue
        fence, start, body = match["fence"], i + 1, []
        closing = re.compile(rf"^{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        while i < len(lines) and not closing.match(lines[i]):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"README.md:{start - 1}: the ```python block is never closed")
        i += 1
        blocks.append((start, "\n".join(body) + "\n"))
    return blocks


def readme_block(key: str) -> tuple[int, str]:
    """The one README python block that starts with ``BLOCK_KEYS[key]``."""
    first_line = BLOCK_KEYS[key]
    found = [(n, code) for n, code in python_blocks(README.read_text(encoding="utf-8"))
             if code.lstrip().startswith(first_line)]
    assert len(found) == 1, f"expected one README python block starting with {first_line!r}, found {len(found)}"
    return found[0]


def _shifted(code: CodeType, lines: int) -> CodeType:
    """``code`` with its line numbers, nested code's included, moved down by ``lines``. A block compiled alone and
    moved to its README line gives tracebacks that name README lines and show the block, not the README above it."""
    consts = tuple(_shifted(c, lines) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_firstlineno=code.co_firstlineno + lines, co_consts=consts)


def run_block(key: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Execute a README block in ``namespace`` (the names a reader has in hand); tracebacks point at README lines."""
    line, code = readme_block(key)
    namespace.setdefault("__name__", f"readme_{key}")
    exec(_shifted(compile(code, str(README), "exec"), line - 1), namespace)  # the README's own text, nothing else
    return namespace


class Show:
    """``show(raw, denoised)``: a reader's viewer. Records copies of what it was given (it is called from worker
    threads), so a test can check that the block displayed real frames and their denoised versions."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._lock = threading.Lock()

    def __call__(self, raw: np.ndarray, denoised: np.ndarray | None = None) -> None:
        pair = (np.array(raw, copy=True), None if denoised is None else np.array(denoised, copy=True))
        with self._lock:
            self.calls.append(pair)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def closer_to_truth(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Mean squared error to the truth of (raw, denoised, truth) triples: (raw's, denoised's)."""
    assert pairs
    return float(np.mean([mse(r, t) for r, _, t in pairs])), float(np.mean([mse(d, t) for _, d, t in pairs]))


def truth(core: Any, image: np.ndarray) -> np.ndarray:
    """The simulator's noise-free image behind ``image``, which must be a frame its camera produced, unchanged."""
    frame = core.microscope.lookup(image)
    assert frame is not None, "a frame differs from every frame the simulated camera produced"
    return frame.truth


def read_ndtiff(path: str | Path) -> dict[tuple, np.ndarray]:
    """Every image of an NDTiff dataset by its sorted axes."""
    from ndstorage import Dataset

    ds = Dataset(str(path))
    try:
        return {tuple(sorted(c.items())): np.asarray(ds.read_image(**c)) for c in ds.get_image_coordinates_list()}
    finally:
        ds.close()


def nothing_new_in_checkout(*names: str) -> Callable[[], None]:
    """A check, made after a block ran, that the relative paths it writes did not land in the checkout."""
    before = {n: (ROOT / n).exists() for n in names}

    def check() -> None:
        created = [n for n, existed in before.items() if not existed and (ROOT / n).exists()]
        assert not created, f"the example wrote into the checkout: {created}"

    return check


# -- fixtures: the working directory, the settings folder ---------------------------------------------------------
SESSION_TOML = """\
# The README's live session, sized for a test: 3 calibration pairs of 4-frame averages, a few fine-tuning steps.
[training]
patch_size = 32
batch_size = 4
max_steps = 20
steps_per_validation = 10
patience = 4

[live]
calibration_positions = 3
reference_average = 4
finetune_time_budget_s = 10.0
interval_ms = 10.0
position_spacing_um = 8.0
"""


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_microscope_toml: Path) -> Iterator[Path]:
    """An empty current directory for the block's relative paths, and ``$LIVEDENOISE_CONFIG_DIR`` pointing at a
    settings folder beside it: the camera presets, conftest's small microscope as ``microscope.toml`` (what
    ``start_simulated_core()`` builds) and :data:`SESSION_TOML` (what ``load_session_settings()`` reads)."""
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config" / "cameras", config / "cameras")
    shutil.copy(small_microscope_toml, config / "microscope.toml")
    (config / "session.toml").write_text(SESSION_TOML)
    monkeypatch.setenv("LIVEDENOISE_CONFIG_DIR", str(config))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work


# -- the README blocks ---------------------------------------------------------------------------------------------
def test_every_readme_python_block_has_a_test() -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    starts = [code.lstrip().splitlines()[0] for _, code in blocks]
    assert sorted(starts) == sorted(BLOCK_KEYS.values()), "a README python block was added, removed or re-headed"


def test_python_blocks_are_parsed_like_markdown() -> None:
    text = "x\n````python\na = 1\n```\nb = 2\n````\n```bash\nc\n```\n~~~~python\nd = 4\n~~~\n~~~~\n"
    assert python_blocks(text) == [(3, "a = 1\n```\nb = 2\n"), (11, "d = 4\n~~~\n")]
    with pytest.raises(AssertionError, match="never closed"):
        python_blocks("```python\na = 1\n")


def test_live_session_block(workdir: Path, simulated_core: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """``core``: conftest's 64x64 simulated core; ``show``: a recording viewer. Settings come from the block's own
    ``load_session_settings()`` (:data:`SESSION_TOML`)."""
    check = nothing_new_in_checkout("runs/exp1")
    show = Show()
    ns = run_block("live_session", {"core": simulated_core, "show": show})
    check()
    report, session = ns["report"], ns["session"]

    assert ns["settings"].live.calibration_positions == 3  # the test's session.toml was the one read
    assert report.calibration_pairs == 3 and not report.errors
    assert report.finetune is not None and report.finetune["steps"] > 0
    assert report.frames_acquired >= 200 and report.frames_written == report.frames_acquired
    assert np.isfinite(report.camera_fps) and report.camera_fps > 0
    assert isinstance(report.swap_criterion["swapped"], bool) and np.isfinite(report.swap_criterion["backbone"])
    assert Path(report.paths["raw"]).is_dir() and Path(report.paths["denoised"]).is_dir()
    assert Path(report.paths["output"]).resolve() == workdir / "runs" / "exp1"
    assert len(read_ndtiff(report.paths["denoised"])) == report.frames_acquired
    assert "calibration pairs collected" in capsys.readouterr().out  # on_status=print printed the progress

    # The viewer got raw camera frames and their denoised versions, and those are closer to the truth.
    assert show.calls and session.status.frames_acquired == report.frames_acquired
    for raw, den in show.calls:
        assert den is not None and den.shape == raw.shape == (64, 64) and not np.array_equal(den, raw)
    raw_err, den_err = closer_to_truth([(raw, den, truth(simulated_core, raw)) for raw, den in show.calls])
    assert den_err < 0.5 * raw_err, (raw_err, den_err)


@pytest.fixture()
def channel_group(simulated_core: Any) -> Iterator[str]:
    """A ``Channel`` config group with ``DAPI``, ``GFP`` and ``BF`` presets (light powers) on the simulated core, as
    a real microscope's configuration has; removed afterwards (the core is shared by the session)."""
    from simulators.core import LIGHT_LABEL, light_power_property

    _, prop = light_power_property()
    for preset, power in {"DAPI": 5.0, "GFP": 20.0, "BF": 50.0}.items():
        simulated_core.defineConfig("Channel", preset, LIGHT_LABEL, prop, power)
    yield "Channel"
    simulated_core.deleteConfigGroup("Channel")


def test_attach_block(workdir: Path, simulated_core: Any, channel_group: str,
                      capsys: pytest.CaptureFixture[str]) -> None:
    """``core``: conftest's 64x64 simulated core with a ``Channel`` group; ``positions``: two stage positions;
    ``sequence``: a small ``useq.MDASequence`` (2 channels x 3 z x 2 positions x 2 time points); ``show``: a
    recording viewer. ``runs/gfp-adapted.safetensors``, the GFP channel's own model, is put where the block
    expects it."""
    import useq

    from livedenoise.checkpoint import load_backbone

    (workdir / "runs").mkdir()
    load_backbone("fast").clone(name="gfp-adapted").save(workdir / "runs" / "gfp-adapted.safetensors")
    positions = [[0.0, 0.0], [8.0, 6.0]]
    sequence = useq.MDASequence(channels=["DAPI", "GFP"], z_plan={"range": 2, "step": 1},
                                stage_positions=[useq.Position(x=x, y=y) for x, y in positions],
                                time_plan={"interval": 0, "loops": 2}, axis_order="tpcz")
    show = Show()
    check = nothing_new_in_checkout("data", "denoised", "raw.ome.zarr")
    ns = run_block("attach", {"core": simulated_core, "show": show, "positions": positions, "sequence": sequence})
    check()
    out = capsys.readouterr().out

    # pycromanager: 5 t x 3 channels x 3 z x 2 positions, raw saved as acquired; BF left raw, GFP with its own model.
    report = ns["den"].report
    raw = read_ndtiff(next((workdir / "data").iterdir()))
    assert len(raw) == report.frames_submitted == 90 and report.frames_skipped == 30
    assert report.frames_written == 60 and not report.errors
    assert sorted(report.channels) == ["DAPI", "GFP"] and report.channels["GFP"]["model"] == "gfp-adapted"
    denoised = read_ndtiff(report.denoised_path)
    assert {dict(k)["channel"] for k in denoised} == {"DAPI", "GFP"} and len(denoised) == 60
    dapi = [(raw[k], d, truth(simulated_core, raw[k])) for k, d in denoised.items() if dict(k)["channel"] == "DAPI"]
    raw_err, den_err = closer_to_truth(dapi)
    assert den_err < 0.5 * raw_err, (raw_err, den_err)
    assert show.calls and all(d is not None and d.shape == r.shape for r, d in show.calls)

    # pymmcore-plus: every frame of the sequence recorded beside pymmcore-plus's own OME-Zarr writer.
    result = ns["handler"].result
    assert result is not None and result.frames_written == len(list(sequence)) == 24 and not result.errors
    assert (workdir / "raw.ome.zarr").is_dir() and Path(result.denoised_path) != Path(report.denoised_path)
    assert {dict(k)["channel"] for k in read_ndtiff(result.denoised_path)} == {"DAPI", "GFP"}
    assert out.count("denoised frames written to") == 2  # both summaries printed


def test_batch_block(workdir: Path, simulated_core: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """``acq_1``: a pycromanager NDTiff dataset (8 time points, 64x64) acquired on the simulated core, in the
    working directory where the block looks for it."""
    from pycromanager import Acquisition

    with Acquisition(directory=str(workdir.parent / "acquired"), name="acq_1", show_display=False) as acq:
        acq.acquire([{"axes": {"time": t}} for t in range(8)])
    shutil.move(acq.get_dataset().path, workdir / "acq_1")
    raw = read_ndtiff(workdir / "acq_1")
    assert len(raw) == 8

    check = nothing_new_in_checkout("out")
    ns = run_block("batch", {})
    check()
    summary = ns["summary"]
    assert summary.frames == 8 and not summary.failed and not summary.dry_run
    assert [m["name"] for m in summary.models] == ["backbone-temporal"]  # model=None on a time-lapse
    assert "acq_1" in capsys.readouterr().out  # the printed report names the input
    out = read_ndtiff(workdir / "out" / "acq_1")
    assert out.keys() == raw.keys()
    assert all(v.dtype == np.uint16 and v.shape == (64, 64) for v in out.values())  # dtype="input", fmt="ndtiff"
    triples = [(raw[k], out[k], truth(simulated_core, raw[k])) for k in raw]
    assert not any(np.array_equal(r, d) for r, d, _ in triples)
    raw_err, den_err = closer_to_truth(triples)
    assert den_err < 0.5 * raw_err, (raw_err, den_err)


def test_simulated_core_block(workdir: Path) -> None:
    """No names needed: ``start_simulated_core()`` builds the default microscope, here conftest's small (32x32)
    one through the test's ``$LIVEDENOISE_CONFIG_DIR``."""
    check = nothing_new_in_checkout("out")
    ns: dict[str, Any] = {}
    try:
        run_block("simulated_core", ns)
        check()
        core, image, expected = ns["core"], ns["image"], ns["truth"]
        assert image.shape == expected.shape == (32, 32) and np.isfinite(expected).all()
        assert core.microscope.lookup(image).metadata["frame_index"] == 3  # the 4th frame: time=3
        assert expected.std() > 0 and mse(image, expected) > 0  # structure in the truth, noise in the image
        assert len(read_ndtiff(next((workdir / "out").iterdir()))) == 10
        assert core.microscope.frame_index >= 20  # 10 frames by pycromanager, then 10 by the MDA
    finally:
        if "core" in ns:
            ns["core"].close()


def test_finetune_block(workdir: Path, small_microscope_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``noisy_frames``: 4 frames at 4 stage positions, ``frame`` one more, ``movie`` 5 frames of one field (all
    64x64, conftest's small microscope); ``other.safetensors``: a second model to swap in. Fine-tuning's default
    ``TrainingConfig`` is made short (32 px patches, 30 steps)."""
    import livedenoise.training.finetune as finetune_module
    from livedenoise.checkpoint import load_backbone, load_checkpoint
    from livedenoise.config import TrainingConfig
    from simulators.core import spread_positions
    from simulators.microscope import SimulatedMicroscope

    monkeypatch.setattr(finetune_module, "TrainingConfig", functools.partial(
        TrainingConfig, patch_size=32, batch_size=4, max_steps=30, steps_per_validation=10, time_budget_s=20.0))
    load_backbone("fast").clone(name="other").save(workdir / "other.safetensors")
    scope = SimulatedMicroscope(small_microscope_config)
    noisy_frames = []
    for x, y in spread_positions(small_microscope_config, 4):
        scope.set_position(x, y)
        noisy_frames.append(scope.snap().image)
    scope.set_position(0.0, 0.0)  # another field
    snaps = [scope.snap() for _ in range(6)]
    frame, expected = snaps[0].image, snaps[0].truth
    movie = np.stack([s.image for s in snaps[1:]])  # static sample: every frame has the same truth

    ns = run_block("finetune", {"noisy_frames": noisy_frames, "frame": frame, "movie": movie})
    adapted, den, clean, stack = ns["adapted"], ns["den"], ns["clean"], ns["stack"]

    assert adapted.metadata["training"]["mode"].startswith("self-supervised")
    assert adapted.metadata["training"]["steps"] > 0 and adapted.metadata["training"]["images"] == 4
    saved = load_checkpoint(workdir / "my-model.safetensors")
    assert saved.name == adapted.name and saved.metadata["training"]["steps"] == adapted.metadata["training"]["steps"]
    assert all(torch.equal(w, v) for w, v in zip(saved.model.state_dict().values(),
                                                 adapted.model.state_dict().values(), strict=True))
    assert clean.dtype == np.float32 and clean.shape == frame.shape and np.isfinite(clean).all()
    assert mse(clean, expected) < 0.5 * mse(frame, expected)
    assert stack.dtype == np.float32 and stack.shape == movie.shape and np.isfinite(stack).all()
    assert mse(stack, expected[None]) < 0.5 * mse(movie, expected[None])
    assert den.name == "other"  # swapped in
