"""The recorder of denoised frames: NDTiff while acquiring, optionally copied into an OME-Zarr when it ends."""
from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest

from livedenoise.acquisition.priority import BACKGROUND_NICENESS
from livedenoise.acquisition.recorder import DenoisedWriter
from livedenoise.errors import ConfigError, LivedenoiseError
from livedenoise.io import open_dataset, read_provenance
from livedenoise.io.convert import PARTIAL, to_ome_zarr


def _frames():
    rng = np.random.default_rng(0)
    axes = [{"time": t, "channel": c} for t in range(3) for c in ("DAPI", "GFP")]
    return axes, [rng.integers(100, 4000, (32, 48)).astype(np.uint16) for _ in axes]


def _record(tmp_path, fmt: str):
    axes, frames = _frames()
    writer = DenoisedWriter(lambda frame, _axes: frame.astype(np.float32) + 0.4, tmp_path, "denoised",
                            output_format=fmt, summary_metadata={"backbone": "test"}).start()
    for a, f in zip(axes, frames, strict=True):
        writer.submit(a, f)
    assert writer.finish(progress=False) == len(frames) and not writer.errors
    return writer, axes, frames


def test_denoised_frames_can_end_as_an_ome_zarr_with_every_frame_and_no_ndtiff_left(tmp_path):
    writer, axes, frames = _record(tmp_path, "ome-zarr")
    assert writer.path == tmp_path / "denoised.ome.zarr" and sorted(p.name for p in tmp_path.iterdir()) == [
        "denoised.ome.zarr"]  # the NDTiff it was recorded in is gone once the copy is complete
    ds = open_dataset(writer.path)
    assert ds.format == "ome-zarr" and ds.axes == "TCYX" and tuple(ds.shape) == (3, 2, 32, 48)
    assert ds.dtype == np.uint16 and read_provenance(writer.path)["recorded_as"] == "ndtiff"
    for a, f in zip(axes, frames, strict=True):  # denoised values rounded to the camera dtype, in acquisition order
        np.testing.assert_array_equal(ds.read_frame((a["time"], ["DAPI", "GFP"].index(a["channel"]))), f)
    ds.close()
    with pytest.raises(ConfigError, match="'zarr' is unknown; expected one of ndtiff, ome-zarr"):
        DenoisedWriter(lambda f, a: f, tmp_path, output_format="zarr")


def test_the_ome_zarr_copy_is_exact_never_overwrites_and_replaces_only_its_own_partial_folder(tmp_path):
    writer, _, _ = _record(tmp_path / "nd", "ndtiff")
    source = open_dataset(writer.path)
    target = tmp_path / "copy.ome.zarr"
    (tmp_path / f"copy.ome.zarr{PARTIAL}").mkdir()  # left by an interrupted copy
    assert to_ome_zarr(writer.path, target, {"note": "x"}) == target
    assert not (tmp_path / f"copy.ome.zarr{PARTIAL}").exists()
    copy = open_dataset(target)
    assert copy.axes == source.axes and tuple(copy.shape) == tuple(source.shape)
    for index in np.ndindex(*source.shape[:-2]):
        np.testing.assert_array_equal(copy.read_frame(index), source.read_frame(index))
    assert read_provenance(target)["note"] == "x"
    before = sorted(p.name for p in target.rglob("*"))
    with pytest.raises(LivedenoiseError, match="already exists"):
        to_ome_zarr(writer.path, target)
    assert sorted(p.name for p in target.rglob("*")) == before


def test_a_failed_copy_keeps_the_ndtiff_and_says_where_the_frames_are(tmp_path, monkeypatch):
    import livedenoise.io.convert as convert

    def broken(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(convert, "to_ome_zarr", broken)
    axes, frames = _frames()
    writer = DenoisedWriter(lambda f, a: f.astype(np.float32), tmp_path, "denoised", output_format="ome-zarr").start()
    for a, f in zip(axes, frames, strict=True):
        writer.submit(a, f)
    writer.finish(progress=False)
    assert writer.path is not None and writer.path.exists() and not str(writer.path).endswith(".ome.zarr")
    assert len(writer.errors) == 1 and "disk full" in writer.errors[0] and str(writer.path) in writer.errors[0]
    ds = open_dataset(writer.path)
    assert int(np.prod(ds.shape[:-2])) == len(frames)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_the_recorder_denoises_at_a_lower_priority_than_the_thread_that_feeds_it(tmp_path):
    """On a busy CPU the display and the acquisition come first; the recorder catches up (livedenoise.acquisition
    .priority)."""
    seen: list[int] = []

    def denoise(frame, _axes):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return frame.astype(np.float32)

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    if mine >= 19:
        pytest.skip("this test runs at the lowest priority already: nothing lower to show")
    writer = DenoisedWriter(denoise, tmp_path, "denoised").start()
    axes, frames = _frames()
    for a, f in zip(axes, frames, strict=True):
        writer.submit(a, f)
    assert writer.finish(progress=False) == len(frames)
    assert len(seen) == len(frames) and set(seen) == {min(19, mine + BACKGROUND_NICENESS)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller's own is unchanged


def test_the_recorder_waits_for_the_displays_result_and_denoises_only_the_frames_it_skipped(tmp_path):
    """A 2-D model's display hands its results over; a recorder that keeps up used to take each frame while the
    display was still denoising it, and both computed it. It now waits ``offer_wait_s`` for the hand-over."""
    axes, frames = _frames()
    computed = []
    writer = DenoisedWriter(lambda frame, a: computed.append(a["time"]) or frame.astype(np.float32) + 0.4, tmp_path,
                            "denoised", offer_wait_s=2.0).start()
    shown = threading.Event()

    def display():  # the display offers its result a moment after each frame, and skips the frames of time 1
        for a, f in zip(axes, frames, strict=True):
            shown.wait(0.05)
            if a["time"] != 1:
                writer.offer_denoised(a, f.astype(np.float32) + 0.4)

    for a, f in zip(axes, frames, strict=True):
        writer.submit(a, f)
    t = threading.Thread(target=display)
    t.start()
    t.join()
    assert writer.finish(progress=False) == len(frames) and not writer.errors
    assert sorted(computed) == [1, 1]  # only the two frames the display skipped were denoised by the recorder
    assert writer.reused == len(frames) - 2
    ds = open_dataset(writer.path)
    for i, f in enumerate(frames):  # every frame recorded, the handed-over ones exactly as denoised
        np.testing.assert_array_equal(ds.read_frame((axes[i]["time"], i % 2)), f)
    ds.close()


def test_a_result_handed_over_after_its_frame_was_written_is_dropped_and_the_waiting_results_are_bounded(
        tmp_path, monkeypatch):
    from livedenoise.acquisition import recorder

    axes, frames = _frames()
    writer = DenoisedWriter(lambda frame, a: frame.astype(np.float32), tmp_path, "denoised").start()  # no wait
    for a, f in zip(axes, frames, strict=True):
        writer.submit(a, f)
    assert writer.finish(progress=False) == len(frames) and writer.reused == 0
    writer.offer_denoised(axes[0], frames[0].astype(np.float32))  # too late: that frame is written
    assert writer._ready == {} and writer._ready_bytes == 0
    # bounded by bytes: a second result that would pass READY_BYTES is not kept
    late = DenoisedWriter(lambda frame, a: frame.astype(np.float32), tmp_path / "b", "denoised")
    monkeypatch.setattr(recorder, "READY_BYTES", frames[0].size * 4 + 1)
    late.offer_denoised(axes[0], frames[0].astype(np.float32))
    late.offer_denoised(axes[1], frames[1].astype(np.float32))
    assert list(late._ready) == [(("channel", "DAPI"), ("time", 0))] and late._ready_bytes == frames[0].size * 4


def test_a_lookahead_recorder_gives_each_frame_the_later_frames_of_its_own_series(tmp_path):
    """lookahead=2: each frame's denoise also gets the next two frames of its channel (fewer at the end), whether
    they wait in memory or were spilled to disk and are read back; every frame is recorded, in order."""
    rng = np.random.default_rng(1)
    axes = [{"time": t, "channel": c} for t in range(5) for c in ("DAPI", "GFP")]
    frames = {(a["time"], a["channel"]): rng.integers(100, 4000, (16, 16)).astype(np.uint16) for a in axes}
    reads = []

    def read_raw(a):
        reads.append((a["time"], a["channel"]))
        return frames[(a["time"], a["channel"])]

    given = {}

    def denoise(frame, a, following):
        given[(a["time"], a["channel"])] = list(following)
        return frame.astype(np.float32)

    writer = DenoisedWriter(denoise, tmp_path, "denoised", read_raw=read_raw, max_queued=3, lookahead=2).start()
    for a in axes:
        writer.submit(a, frames[(a["time"], a["channel"])])
    assert writer.finish(progress=False) == len(axes) and not writer.errors and writer.spilled > 0
    for (t, c), following in given.items():
        want = [frames[(u, c)] for u in range(t + 1, min(t + 3, 5))]
        assert len(following) == len(want), (t, c)
        for f, w in zip(following, want, strict=True):
            np.testing.assert_array_equal(f, w)
    assert len(given) == len(axes)
    assert len(reads) == len(set(reads)) == writer.spilled  # each spilled frame read from disk once
    ds = open_dataset(writer.path)
    for i, a in enumerate(axes):
        np.testing.assert_array_equal(ds.read_frame((a["time"], i % 2)), frames[(a["time"], a["channel"])])
    ds.close()


def test_a_lookahead_recorder_waits_for_the_next_frames_until_it_closes(tmp_path):
    """Frame 0 is recorded only once the frames after it have come (or the acquisition ended)."""
    got = []
    writer = DenoisedWriter(lambda f, a, following: got.append((a["time"], len(following))) or f.astype(np.float32),
                            tmp_path, "denoised", lookahead=2).start()
    frame = np.full((8, 8), 200, np.uint16)
    writer.submit({"time": 0}, frame)
    writer.submit({"time": 1}, frame)
    time.sleep(0.3)
    assert got == []  # waiting for frame 2
    writer.submit({"time": 2}, frame)
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == [(0, 2)]
    with pytest.raises(ValueError, match="lookahead"):
        DenoisedWriter(lambda f, a: f, tmp_path, "x", lookahead=-1)
    assert writer.finish(progress=False) == 3
    assert got == [(0, 2), (1, 1), (2, 0)]


def test_on_closing_runs_once_in_the_writer_thread_before_the_frames_still_waiting(tmp_path):
    """When the acquisition has ended (finish), the writer calls on_closing once, in its own thread, before it
    denoises the frames still queued (a live session then gives that thread every core)."""
    release, started = threading.Event(), threading.Event()
    events = []

    def denoise(frame, axes):
        if axes["time"] == 0:
            started.set()
            release.wait(10)  # frames 1-3 stay queued until finish() has been called
        events.append(("frame", axes["time"], threading.current_thread().name))
        return frame.astype(np.float32)

    writer = DenoisedWriter(denoise, tmp_path, "denoised",
                            on_closing=lambda: events.append(("closing", None, threading.current_thread().name)))
    writer.start()
    for t in range(4):
        writer.submit({"time": t}, np.full((8, 8), 300 + t, np.uint16))
    assert started.wait(10)  # the writer is denoising frame 0: the acquisition has not ended yet
    finisher = threading.Thread(target=lambda: writer.finish(progress=False))
    finisher.start()
    deadline = time.monotonic() + 10
    while not writer._closing and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    finisher.join(30)
    assert writer.written == 4 and not writer.errors
    assert [e[:2] for e in events] == [("frame", 0), ("closing", None), ("frame", 1), ("frame", 2), ("frame", 3)]
    assert {e[2] for e in events} == {"livedenoise-writer"}


def test_a_failing_on_closing_hook_costs_no_frame(tmp_path):
    def boom():
        raise RuntimeError("no")

    writer = DenoisedWriter(lambda f, a: f.astype(np.float32), tmp_path, "denoised", on_closing=boom).start()
    for t in range(3):
        writer.submit({"time": t}, np.full((8, 8), 300, np.uint16))
    assert writer.finish(progress=False) == 3 and not writer.errors


def test_without_read_raw_the_backlog_past_max_queued_is_parked_on_disk_and_removed_when_written(tmp_path):
    """No read_raw (the MDA handler, AttachedDenoiser.submit): past max_queued the waiting frames are parked as
    .npy files in a hidden folder of the output, not kept in memory; each comes back exactly, with the lookahead
    frames of its series too, and the folder is gone once every frame is written."""
    rng = np.random.default_rng(2)
    axes = [{"time": t} for t in range(10)]
    frames = [rng.integers(100, 4000, (16, 24)).astype(np.uint16) for _ in axes]
    release, started = threading.Event(), threading.Event()
    given = {}

    def denoise(frame, a, following):
        started.set()
        assert release.wait(30)
        given[a["time"]] = [f.copy() for f in following]
        return frame.astype(np.float32) + 1

    writer = DenoisedWriter(denoise, tmp_path, "denoised", max_queued=2, lookahead=2).start()
    for a, f in zip(axes[:3], frames[:3], strict=True):
        writer.submit(a, f)
    assert started.wait(30)  # frame 0 is being denoised (out of the queue); frames 1 and 2 wait in memory
    for a, f in zip(axes[3:], frames[3:], strict=True):
        writer.submit(a, f)
    deadline = time.monotonic() + 30
    # the writer's parking thread: at most 2 in memory besides the frame being denoised (and a file being written
    # counted once it is complete)
    while writer.spilled < 7 or writer.spilled != len(list(tmp_path.glob(".livedenoise-spill-*/*.npy"))):
        assert time.monotonic() < deadline, writer.spilled
        time.sleep(0.05)
    time.sleep(0.3)
    parked = list(tmp_path.glob(".livedenoise-spill-*/*.npy"))
    assert writer.spilled == writer.parked == len(parked) == 7  # the newest 7; no more than needed
    release.set()
    assert writer.finish(progress=False) == 10 and not writer.errors
    assert not list(tmp_path.glob(".livedenoise-spill-*"))  # removed: only what the writer wrote
    for t in range(10):
        want = frames[t + 1:t + 3]
        assert len(given[t]) == len(want)
        for f, w in zip(given[t], want, strict=True):
            np.testing.assert_array_equal(f, w)
    ds = open_dataset(writer.path)
    for t in range(10):
        np.testing.assert_array_equal(ds.read_frame((t,)), frames[t] + 1)
    ds.close()


@pytest.mark.parametrize("refusal", ["write fails", "room kept for raw data"])
def test_a_disk_that_refuses_the_parked_frames_keeps_them_in_memory_and_loses_none(tmp_path, monkeypatch, caplog,
                                                                                    refusal):
    """A disk that fails the write (full) or would keep less than KEEP_FREE_BYTES free (that room is the raw data's):
    the frames wait in memory, one warning says why, and every frame is written."""
    import livedenoise.acquisition.spill as spill

    if refusal == "write fails":
        def full(path, _frame):
            path.write_bytes(b"\x93NUMPY")  # a partial file, then the disk is full
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(spill, "_write", full)
    else:
        monkeypatch.setattr(spill, "KEEP_FREE_BYTES", 1 << 62)
    release = threading.Event()
    writer = DenoisedWriter(lambda f, a: (release.wait(30), f.astype(np.float32))[1], tmp_path, "denoised",
                            max_queued=1).start()
    frames = [np.full((8, 8), 100 + t, np.uint16) for t in range(6)]
    with caplog.at_level("WARNING", logger="livedenoise"):
        for t, f in enumerate(frames):
            writer.submit({"time": t}, f)
        deadline = time.monotonic() + 30
        while not any("could not park" in r.getMessage() for r in caplog.records):  # the parking thread tried
            assert time.monotonic() < deadline
            time.sleep(0.01)
        release.set()
        assert writer.finish(progress=False) == 6 and not writer.errors
    assert writer.spilled == 0  # nothing parked: every frame waited in memory
    assert sum("could not park frames on disk" in r.getMessage() for r in caplog.records) == 1
    assert not list(tmp_path.glob(".livedenoise-spill-*"))  # no partial file, no folder left
    ds = open_dataset(writer.path)
    for t in range(6):
        np.testing.assert_array_equal(ds.read_frame((t,)), frames[t])
    ds.close()


def test_handing_a_frame_over_never_waits_for_the_disk_that_parks_it(tmp_path, monkeypatch):
    """The frames past max_queued are parked by the writer's own thread: a disk that takes seconds per frame does not
    slow submit (the acquisition's thread); they wait in memory meanwhile, and every frame is written."""
    import livedenoise.acquisition.spill as spill

    disk = threading.Event()
    original = spill.SpillStore.put

    def slow_put(self, key, frame):
        disk.wait(30)
        return original(self, key, frame)

    monkeypatch.setattr(spill.SpillStore, "put", slow_put)
    release = threading.Event()
    writer = DenoisedWriter(lambda f, a: (release.wait(30), f.astype(np.float32))[1], tmp_path, "denoised",
                            max_queued=2).start()
    frames = [np.full((8, 8), 100 + t, np.uint16) for t in range(8)]
    t0 = time.perf_counter()
    for t, f in enumerate(frames):
        writer.submit({"time": t}, f)
    assert time.perf_counter() - t0 < 5  # not 30 s per frame: submit never waited for the blocked disk
    assert writer.parked == 0  # the parking thread is stuck in the disk, the frames wait in memory
    disk.set()
    release.set()
    assert writer.finish(progress=False) == 8 and not writer.errors
    ds = open_dataset(writer.path)
    for t in range(8):
        np.testing.assert_array_equal(ds.read_frame((t,)), frames[t])
    ds.close()
    assert not list(tmp_path.glob(".livedenoise-spill-*"))


def test_a_parking_folder_left_by_a_crashed_recorder_is_named_and_kept(tmp_path, caplog):
    """A folder an earlier recorder left (it crashed before finishing) is named in a warning when frames are parked
    again into the same output folder, and never removed: another process may still be recording into it."""
    old = tmp_path / ".livedenoise-spill-0123456789ab"
    old.mkdir()
    (old / "0.npy").write_bytes(b"x" * 1000)
    release = threading.Event()
    writer = DenoisedWriter(lambda f, a: (release.wait(30), f.astype(np.float32))[1], tmp_path, "denoised",
                            max_queued=1).start()
    with caplog.at_level("WARNING", logger="livedenoise"):
        for t in range(5):
            writer.submit({"time": t}, np.full((8, 8), 100 + t, np.uint16))
        deadline = time.monotonic() + 30
        while writer.parked < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        release.set()
        assert writer.finish(progress=False) == 5 and not writer.errors
    left = [r.getMessage() for r in caplog.records if "left in" in r.getMessage()]
    assert len(left) == 1 and old.name in left[0]
    assert (old / "0.npy").exists() and list(tmp_path.glob(".livedenoise-spill-*")) == [old]
