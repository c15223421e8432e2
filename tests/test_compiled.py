"""Denoiser(compiled=True): torch.compile'd passes equal the uncompiled ones, a failed compilation falls back with
one warning, and a swap compiles the next network before it is shown (livedenoise.compiled)."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch

import livedenoise.compiled as compiled_module
from livedenoise.compiled import MAX_SHAPES
from livedenoise.inference import RECENT_ENGINES, Denoiser
from livedenoise.models import build_model
from livedenoise.normalization import Normalizer


def _net(seed: int) -> tuple[torch.nn.Module, Normalizer]:
    torch.manual_seed(seed)
    return build_model("unet", widths=[4, 8]), Normalizer(offset=100.0, gain=2.0, noise_b=4.0, vst=True, scale=10.0)


def _frame(shape=(64, 48), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + rng.poisson(30, shape)).astype(np.uint16)


class _Recorder:
    """Stands in for torch.compile: records which networks were compiled and the shapes their forms ran."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.compiled: list[torch.nn.Module] = []
        self.calls: list[tuple[torch.nn.Module, tuple[int, ...]]] = []
        self.seen: set[tuple[int, tuple[int, ...]]] = set()

    def __call__(self, net, **kwargs):
        assert kwargs == {"dynamic": False, "isolate_recompiles": True, "recompile_limit": MAX_SHAPES + 1}
        self.compiled.append(net)

        def run(x):
            key = (id(net), tuple(x.shape))
            # freezing is set while a new shape compiles (dynamo reads it globally), and only then
            assert torch._inductor.config.freezing is (key not in self.seen)
            self.seen.add(key)
            if self.fail:  # what torch raises without a C++ compiler
                raise torch._inductor.exc.InductorError(
                    RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail"), None)
            self.calls.append((net, tuple(x.shape)))
            return net(x)
        return run


def test_compiled_passes_run_through_the_compiled_form_and_equal_the_uncompiled(monkeypatch):
    rec = _Recorder()
    monkeypatch.setattr(compiled_module.torch, "compile", rec)
    frame = _frame()
    den = Denoiser(_net(0), device="cpu", compiled=True)
    assert den.compiled and den.compile_failure is None
    out = den.denoise(frame)
    np.testing.assert_array_equal(out, Denoiser(_net(0), device="cpu").denoise(frame))
    assert len(rec.compiled) == 1 and rec.calls and rec.calls[0][1][-2:] == (64, 48)  # the compiled form ran
    den.denoise(_frame(seed=1))
    assert len(rec.compiled) == 1  # compiled once per network, not per call


def test_a_failed_compilation_runs_uncompiled_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(compiled_module.torch, "compile", _Recorder(fail=True))
    frame = _frame()
    den = Denoiser(_net(0), device="cpu", compiled=True)
    with caplog.at_level(logging.WARNING, logger="livedenoise"):
        out = den.denoise(frame)
        den.denoise(frame)
    np.testing.assert_array_equal(out, Denoiser(_net(0), device="cpu").denoise(frame))
    assert den.compile_failure == "InductorError: RuntimeError: InvalidCxxCompiler: No working C++ compiler found"
    warnings = [r.getMessage() for r in caplog.records if "torch.compile could not compile" in r.getMessage()]
    assert len(warnings) == 1 and "runs uncompiled" in warnings[0] and "No working C++ compiler" in warnings[0]


def test_swap_compiles_the_next_network_for_the_shapes_already_run(monkeypatch):
    rec = _Recorder()
    monkeypatch.setattr(compiled_module.torch, "compile", rec)
    den = Denoiser(_net(0), device="cpu", compiled=True)
    den.denoise(_frame((64, 48)))
    den.denoise(_frame((32, 32)))
    rec.calls.clear()
    den.swap(_net(1))
    new = den._current().model
    # before swap() returned, the new network's compiled form had run on both shapes (in the caller's thread)
    assert {shape[-2:] for net, shape in rec.calls if net is new} == {(64, 48), (32, 32)}
    rec.calls.clear()
    out = den.denoise(_frame((64, 48)))
    np.testing.assert_array_equal(out, Denoiser(_net(1), device="cpu").denoise(_frame((64, 48))))
    assert rec.calls == [(new, rec.calls[0][1])] and len(rec.compiled) == 2  # no new compilation at the frame


def test_uncompiled_denoiser_never_compiles(monkeypatch):
    rec = _Recorder()
    monkeypatch.setattr(compiled_module.torch, "compile", rec)
    den = Denoiser(_net(0), device="cpu")
    den.denoise(_frame())
    den.swap(_net(1))
    assert not den.compiled and rec.compiled == [] and den._shapes_run == {}


def test_errors_of_the_network_itself_propagate_and_leave_compilation_on(monkeypatch):
    def compile_that_raises(net, **kwargs):
        def run(x):
            raise ValueError("an error of the network's own")
        return run

    monkeypatch.setattr(compiled_module.torch, "compile", compile_that_raises)
    den = Denoiser(_net(0), device="cpu", compiled=True)
    with pytest.raises(ValueError, match="network's own"):  # not taken for a failed compilation
        den.denoise(_frame())
    assert den.compile_failure is None


def test_shapes_beyond_the_limit_run_uncompiled_with_one_warning(monkeypatch, caplog):
    rec = _Recorder()
    monkeypatch.setattr(compiled_module.torch, "compile", rec)
    den = Denoiser(_net(0), device="cpu", compiled=True)
    with caplog.at_level(logging.WARNING, logger="livedenoise"):
        for k in range(MAX_SHAPES + 2):
            den.denoise(_frame((32 + 8 * k, 32)))
    assert len(rec.calls) == MAX_SHAPES  # the first MAX_SHAPES shapes compiled, the last two ran as they are
    assert sum("new shapes" in r.getMessage() for r in caplog.records) == 1
    out = den.denoise(_frame((32 + 8 * (MAX_SHAPES + 1), 32)))
    assert out.shape == (32 + 8 * (MAX_SHAPES + 1), 32) and len(rec.calls) == MAX_SHAPES


def test_a_swap_back_reuses_the_compiled_engine_and_old_networks_are_freed(monkeypatch):
    import gc
    import weakref

    rec = _Recorder()
    monkeypatch.setattr(compiled_module.torch, "compile", rec)
    first, second = _net(0), _net(1)
    den = Denoiser(first, device="cpu", compiled=True)
    den.denoise(_frame())
    engine = den._current()
    den.swap(second)
    den.swap(first)  # the compare toggle: back to the first source
    assert den._current() is engine and len(rec.compiled) == 2  # no third compilation
    gone = weakref.ref(engine.model)
    for seed in range(2, 2 + RECENT_ENGINES + 1):  # enough other sources to push it out of the recent engines
        den.swap(_net(seed))
    del engine
    rec.compiled.clear()  # the test's own references
    rec.calls.clear()
    gc.collect()
    assert gone() is None  # its network and compiled form were freed (a cache keyed by the network leaked them)


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile needs a C++ compiler")
def test_real_compilation_equals_the_uncompiled_network_and_freezes_its_weights():
    from torch._dynamo.utils import counters

    frame = _frame((64, 64))
    ref = Denoiser(_net(0), device="cpu").denoise(frame)
    den = Denoiser(_net(0), device="cpu", compiled=True)
    graphs = counters["stats"]["unique_graphs"]
    out = den.denoise(frame)
    assert den.compile_failure is None and counters["stats"]["unique_graphs"] == graphs + 1  # it really compiled
    assert np.abs(out - ref).max() <= 1e-3 * (ref.max() - ref.min())
    with torch.no_grad():  # the weights are constants of the compiled graph: changing the module changes nothing
        next(den._current().model.parameters()).add_(1.0)
    np.testing.assert_array_equal(den.denoise(frame), out)
