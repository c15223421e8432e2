"""The batch job: validate everything, plan, preallocate, run the blocks, finalize (:func:`denoise_dataset`)."""
from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise import __version__
from livedenoise.batch.adaptation import _adapt_models
from livedenoise.batch.block import BlockJob, BlockResult, block_digest, forget_datasets, share_dataset
from livedenoise.batch.execution import _connection, _Runner
from livedenoise.batch.manifest import MANIFEST_VERSION, Manifest
from livedenoise.batch.models import (
    DenoiserOptions,
    ModelRef,
    _check_time_axes,
    _model_thread,
    default_model_for,
    get_denoiser,
    resolve_model,
)
from livedenoise.batch.options import BatchOptions, _now
from livedenoise.batch.planning import BlockPlan, plan_blocks
from livedenoise.batch.progress import _Progress
from livedenoise.batch.summary import BatchSummary, ItemSummary
from livedenoise.diskspace import ensure_room
from livedenoise.errors import BatchIncomplete, ConfigError, InputDataError, LivedenoiseError
from livedenoise.io import (
    ImageDataset,
    InputItem,
    NpyBlockTarget,
    OmeTiffTarget,
    SourceSpec,
    create_ome_tiff,
    expand_inputs,
    open_dataset,
    remove_path,
    update_ome_provenance,
    write_ndtiff,
)
from livedenoise.io.omezarr import OmeZarrTarget, create_ome_zarr, forget_open_arrays, update_zarr_provenance
from livedenoise.progress import console as progress_console

log = logging.getLogger("livedenoise")


@dataclass
class _Item:
    item: InputItem
    dataset: ImageDataset
    output: Path
    manifest: Manifest
    plan: BlockPlan | None = None
    summary: ItemSummary | None = None
    refs: list[ModelRef] | None = None  # the models with the noise model fitted to this item (per channel)
    preflight: dict[str, Any] | None = None  # residual check on the noise-fit frames, before any output


def _output_dtype(policy: str, in_dtype: np.dtype) -> np.dtype:
    if policy == "float32":
        return np.dtype(np.float32)
    if policy == "input":
        return np.dtype(in_dtype)
    return np.dtype(policy)


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def _check_paths(items: list[_Item], out_dir: Path, inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Never write into an input (file or folder), never let two inputs share an output."""
    out_res = out_dir.resolve()
    folders = [Path(p).resolve() for p in inputs if Path(p).is_dir()] + \
              [it.item.path.resolve() for it in items if it.item.path.is_dir()]
    for folder in folders:
        if _is_within(out_res, folder):
            raise InputDataError(f"Output folder {out_dir} lies inside the input {folder}; choose an output "
                                 "folder outside the data so the input is never modified.")
        for it in items:
            if _is_within(it.output.resolve(), folder):
                raise InputDataError(f"Output {it.output} would lie inside the input {folder}; choose an output "
                                     "folder outside the data so the input is never modified.")
    seen: dict[Path, Path] = {}
    for it in items:
        src = it.item.path.resolve()
        out = it.output.resolve()
        if out == src or _is_within(src, out):
            raise InputDataError(f"The output for {it.item.path} would be {it.output}, the input itself; choose "
                                 "another output folder (-o).")
        if out in seen:
            raise InputDataError(f"Inputs {seen[out]} and {it.item.path} would both be written to {it.output}; "
                                 "rename one or process them separately.")
        seen[out] = it.item.path


def _flag(option: str, value: Any, value_only: bool = False) -> str:
    """How a user asks for ``option`` = ``value`` on the command line (for resume messages); ``value_only``: just
    the value where the option takes one."""
    if option == "second_pass":
        return "the temporal second pass" if value else "--no-second-pass"
    return str(value) if value_only else f"--{option} {value}"


def _provenance(it: _Item, models: list[ModelRef], adapt_info: dict[str, Any] | None, out_dtype: np.dtype,
                policy: str, fmt: str) -> dict[str, Any]:
    ds = it.dataset
    model_desc: Any = [m.describe() for m in models] if len(models) > 1 else models[0].describe()
    prov = {
        "software": "livedenoise",
        "livedenoise_version": __version__,
        "date": _now(),
        "model": model_desc,
        "input": {"path": str(ds.path.resolve()), "format": ds.format, "axes": ds.axes, "shape": list(ds.shape),
                  "dtype": ds.dtype.name},
        "axes": ds.axes,
        "shape": list(ds.shape),
        "output_dtype": out_dtype.name,
        "dtype_policy": policy,
        "format": fmt,
        "ensemble": it.plan.denoiser.ensemble if it.plan is not None else 1,
        "precision": it.plan.denoiser.precision if it.plan is not None else "",
        "second_pass": it.plan.denoiser.second_pass if it.plan is not None else False,
        "compiled": it.plan.denoiser.compiled if it.plan is not None else False,
    }
    if adapt_info:
        prov["adapted"] = adapt_info
    if ds.metadata.get("description"):
        prov["source_description"] = ds.metadata["description"]
    if ds.metadata.get("imagej"):
        prov["source_imagej"] = ds.metadata["imagej"]
    if ds.metadata.get("provenance"):
        prov["previous"] = ds.metadata["provenance"]
    return prov


def denoise_dataset(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    options: BatchOptions | None = None,
    **settings: Any,
) -> BatchSummary:
    """Denoise saved datasets into ``output_dir``; the Python twin of ``livedenoise denoise``.

    The settings below are the fields of :class:`~livedenoise.batch.options.BatchOptions`, given as keywords
    (``denoise_dataset(paths, "out", dtype="input")``), as a ``BatchOptions`` (reused across jobs), or both
    (keywords override). They are all checked, together, before anything is opened.

    ``inputs``: TIFF / OME-TIFF / ND2 / CZI / LIF files, folders of them, NDTiff or OME-Zarr folders. ``model``:
    ``"standard"``/``"fast"``, a checkpoint path, a Checkpoint (or a list / dict of them, one
    per channel; ``None``: :data:`livedenoise.checkpoint.DEFAULT_BACKBONE`). ``adapt``: ``None``,
    ``"self"`` (Noise2Self on a sample of the data) or
    ``"pairs"`` with ``pairs=DIR`` (or ``("pairs", DIR)``). ``dtype``: ``"float32"``,
    ``"input"`` (rounded and clipped to the input type), ``"uint16"``, ``"uint8"``. ``fmt``:
    ``"ome-tiff"``, ``"ome-zarr"`` (OME-NGFF 0.5; positions as a bioformats2raw layout; see
    :mod:`livedenoise.io.omezarr`) or ``"ndtiff"`` (integer dtypes only). ``memory_budget``: bytes or text such
    as ``"512MB"`` -- for the whole local job, or per worker with ``scheduler`` (a
    dask.distributed address or Client). ``workers``: local threads (default 2).
    ``on_block_done`` is called after each finished block (raise in it to stop the run).

    Noise model: for every input and channel a normaliser is fitted to the data itself
    (:mod:`livedenoise.dataset_noise`; from temporal differences when there is a time axis), or
    taken from ``camera_calibration`` (a ``livedenoise calibrate-camera`` file; per-pixel maps when the
    frames have the calibrated size); ``frames_averaged`` says each frame is the mean of that many
    acquisitions. The model's stored normaliser only sets the scale. Before any output is written
    the fitted model is checked on a sample frame (:mod:`livedenoise.residual_check`): a failed
    check is a warning in the summary and the provenance, or an error with ``strict``. Frames whose
    signal is far above the backbone's training range are copied unchanged (with a warning).
    ``noise_model="stored"`` skips all of this and uses each model's stored normaliser as it is
    (for a model trained on exactly this camera and light level). ``ensemble`` (1, 2, 4 or 8)
    averages the network over that many flips/rotations of every frame: better quality at that many
    times the compute (see :class:`~livedenoise.inference.Denoiser`); a resumed job keeps the value it
    started with. ``precision``: ``"auto"`` (fp16 on CUDA, fp32 elsewhere), ``"fp32"``, ``"bf16"`` (on a CPU
    with native bfloat16 the network runs 1.8-2x faster than fp32, at a measured quality cost: see the README) or
    ``"fp16"``; a resumed job must ask for the one it started with. ``second_pass`` (default ``True``): with the
    temporal backbone, also denoise each frame's motion-compensated average (:mod:`livedenoise.second_pass`);
    ``False`` halves its cost; a resumed job keeps the setting it started with. ``compiled``: run the network through
    ``torch.compile`` (:mod:`livedenoise.compiled`): seconds of compilation per tile shape in each process, then
    faster passes where much of the time is not convolutions (bf16 on a CPU with AMX); the same outputs in fp32, within
    1e-2 of the range in bf16.
    """
    base = {name: getattr(options, name) for name in BatchOptions.model_fields} if options is not None else {}
    opts = BatchOptions.build(**{**base, **settings})
    model, adapt, pairs, axes, dtype, fmt = opts.model, opts.adapt, opts.pairs, opts.axes, opts.dtype, opts.fmt
    resume, overwrite, budget, dry_run, per_channel = opts.resume, opts.overwrite, opts.memory_budget, opts.dry_run, \
        opts.per_channel
    device, calibration, frames_averaged, noise_model = opts.device, opts.camera_calibration, opts.frames_averaged, \
        opts.noise_model
    with _connection(opts.scheduler, dry_run) as connection:
        t_start = time.perf_counter()
        out_dir = Path(output_dir)
        from livedenoise.device import select_device
        from livedenoise.inference import effective_precision

        # what runs, recorded and compared on --resume ("auto" is fp16 on CUDA, fp32 elsewhere: a job started on a
        # CPU and resumed on a GPU must not mix the two)
        device_type = select_device(device).type
        precision = effective_precision(opts.precision, device_type)
        precision_of_auto = effective_precision("auto", device_type)
        if out_dir.exists() and not out_dir.is_dir():
            raise InputDataError(f"Output {out_dir} exists and is not a folder.")
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        summary = BatchSummary(output_dir=str(out_dir), dry_run=dry_run)

        # -- 1. inputs (metadata only) and output names ------------------------------------------
        items: list[_Item] = []
        expanded = expand_inputs(inputs)
        multi = len(expanded) > 1  # one bad file must not stop a folder: it is named and skipped
        for item in expanded:
            try:
                ds = open_dataset(item.path, axes=axes if item.path.is_file() else None)
            except InputDataError as exc:
                if not multi:
                    raise _named(item.path, exc) from None
                _skip_input(summary, item.path, exc)
                continue
            suffix = {"ome-tiff": ".ome.tif", "ome-zarr": ".ome.zarr"}.get(fmt, "")
            items.append(_Item(item, ds, out_dir / (item.output_stem + suffix), Manifest(out_dir, item.output_stem)))
        _check_paths(items, out_dir, inputs)
        if model is None:
            model = default_model_for([it.dataset for it in items])
        policies = {it.item.path: _output_dtype(dtype, it.dataset.dtype) for it in items}
        for it in items:
            out_dtype = policies[it.item.path]
            if fmt == "ndtiff" and out_dtype not in (np.uint8, np.uint16):
                fix = ("--dtype uint16 (rounded and clipped), or another --format" if it.dataset.dtype.kind == "f" or
                       dtype == "input" else "--dtype input (for uint8/uint16 data) or --dtype uint16")
                raise ConfigError(f"NDTiff stores only uint8 / uint16 pixels but the output for {it.item.path} would "
                                  f"be {out_dtype}; pass {fix}.")
            if fmt == "ome-tiff" and out_dtype == np.float16:  # OME has no half-float pixel type
                raise ConfigError(f"OME-TIFF has no float16 pixel type, the output for {it.item.path} with --dtype "
                                  f"{dtype}; pass --dtype float32 (the default).")
            if out_dtype.kind not in "uif":
                raise ConfigError(f"Output dtype {out_dtype} is not supported.")
            exists = it.output.exists() or it.manifest.exists()
            if exists and not (resume or overwrite or dry_run):
                raise LivedenoiseError(f"{it.output} already exists; pass --resume to continue an interrupted run or "
                                       "--overwrite to replace it.")
            if resume and it.output.exists() and not it.manifest.exists():
                raise LivedenoiseError(f"{it.output} exists but has no resume record (it was not left by an "
                                       "interrupted livedenoise run); pass --overwrite to replace it.")
        if not dry_run:
            _check_output_space(out_dir, [(it.dataset, policies[it.item.path]) for it in items
                                          if not (resume and it.manifest.exists())])  # resumed: already allocated

        # -- 2. models ---------------------------------------------------------------------------
        client, concurrency, per_worker = None, opts.workers or 2, 1
        if connection is not None:
            client, concurrency, per_worker, _ = connection
        console = progress_console() if opts.progress else None
        notes: list[str] = []
        adapt_info = None
        base_ref = None
        if adapt is not None:
            base_ref = resolve_model(model)  # validates the starting model before any training
            from livedenoise.bioimageio_import import FOREIGN_ARCH

            if base_ref.arch == FOREIGN_ARCH:
                raise ConfigError(f"--adapt {adapt}: {base_ref.name!r} is a BioImage Model Zoo model run as it is; "
                                  "fine-tuning needs a livedenoise backbone ('fast', 'standard' or a .safetensors "
                                  "checkpoint).")
            n_models = 1
            if per_channel:
                n_models = max(it.dataset.size("C") for it in items)
                if n_models <= 1:
                    raise InputDataError("--per-channel needs inputs with a C (channel) axis; none of the inputs has "
                                         "several channels.")
                if adapt == "pairs":
                    raise ConfigError("--per-channel adapts one model per channel from the data itself; "
                                      "use it with --adapt self.")
            refs = [ModelRef(**{**asdict(base_ref), "channel": c if n_models > 1 else None}) for c in range(n_models)]
        elif isinstance(model, dict):
            refs = [resolve_model(model[k], channel=int(k)) for k in sorted(model)]
        elif isinstance(model, (list, tuple)) and not (len(model) == 2 and hasattr(model[0], "state_dict")):
            refs = [resolve_model(m, channel=i) for i, m in enumerate(model)]
        else:
            refs = [resolve_model(model)]
        if len(refs) > 1:
            for it in items:
                if it.dataset.size("C") != len(refs):
                    raise InputDataError(f"{it.item.path} has {it.dataset.size('C')} channel(s) but {len(refs)} "
                                         "per-channel models are used; expected one model per channel.")
        if client is not None:
            for r in refs:
                if r.path is None:
                    raise ConfigError(f"Model {r.name!r} has no checkpoint file; dask workers load models from a path, "
                                      "so save it first (Checkpoint.save) and pass the path.")
        temporal = any(r.temporal for r in refs)
        # the second pass belongs to the fused temporal backbone (unet-temporal), not to a CNNT
        fused = any(r.arch == "unet-temporal" for r in refs)
        summary.temporal_mode = ("" if not fused else "with its second pass" if opts.second_pass
                                 else "the fusion alone (--no-second-pass)")
        if temporal:
            _check_time_axes(items, refs)

        # -- 3. plans ----------------------------------------------------------------------------
        local_budget = budget if client is None else budget * concurrency // max(1, per_worker)
        for it in items:
            ds = it.dataset
            out_dtype = policies[it.item.path]
            split = ("C" if (len(refs) > 1 or ds.size("C") > 1) else "") + ("P" if ds.axes.startswith("P") else "")
            # a temporal network's blocks along T are read with its window's neighbours on each side
            window = max(r.window for r in refs) if temporal else 1
            weights = 3 * sum(r.weights_bytes for r in refs)  # file + loaded checkpoint + the Denoiser's own copy
            plan = plan_blocks(ds.shape, ds.axes, ds.dtype, out_dtype, local_budget, concurrency=concurrency,
                               split_axes=split, context_axes="T" if temporal else "", context=window - 1,
                               first_width=max(r.first_width for r in refs), margin=max(r.margin for r in refs),
                               weights_bytes=weights, window=window, device=device,
                               ensemble=opts.ensemble, precision=precision,
                               second_pass=opts.second_pass and fused, compiled=opts.compiled)
            resumed = clipped = 0
            status_text = "planned"
            if (it.output.exists() or it.manifest.exists()) and not (resume or overwrite):
                status_text = "output exists: needs --resume or --overwrite"
            elif it.output.exists() and overwrite:
                status_text = "planned (replaces the existing output)"
            if it.manifest.exists() and resume:
                data = it.manifest.load()
                if data.get("state") == "complete":
                    status_text = "already complete"
                    clipped = int((data.get("summary") or {}).get("clipped", 0))
                # a job started before precisions were recorded ran the default, "auto", on this kind of device
                # (and a temporal job started before the second pass existed ran without it)
                for option, default, asked in (("ensemble", 1, opts.ensemble),
                                               ("precision", precision_of_auto, precision),
                                               ("second_pass", False, opts.second_pass and fused)):
                    recorded = data["plan"]["denoiser"].get(option, default)
                    if recorded != asked:  # a block-wise mix of two settings would be one output of neither
                        was, now = _flag(option, recorded), _flag(option, asked, value_only=True)
                        raise LivedenoiseError(
                            f"Cannot resume {it.output}: the interrupted run used {was}, this one asks for {now}; "
                            f"resume with {was} or pass --overwrite to start again.")
                plan = BlockPlan(ds.axes, ds.shape, tuple(data["plan"]["chunks"]), int(data["plan"]["bytes_per_block"]),
                                 # a job from before the second pass existed ran without it
                                 # compiling changes outputs by rounding at most (none in fp32): this run's choice
                                 # holds whatever the first one was
                                 DenoiserOptions(**{"second_pass": False, **data["plan"]["denoiser"],
                                                    "compiled": opts.compiled}),
                                 # before 2026-12-06 a temporal block held the whole T axis: no context
                                 tuple(data["plan"].get("context", ())))
                resumed = len(it.manifest.done())
            it.plan = plan
            it.summary = ItemSummary(str(it.item.path), str(it.output), ds.format, ds.axes, tuple(ds.shape),
                                     ds.dtype.name, out_dtype.name, plan.n_blocks, plan.block_shape,
                                     plan.bytes_per_block, status=status_text, blocks_resumed=resumed, clipped=clipped,
                                     block_context=plan.context)
            summary.items.append(it.summary)
        # -- 4. adaptation (after planning: a plan that cannot work fails before minutes of training) ----
        if adapt is not None:
            assert base_ref is not None
            status = (lambda text: console.print(f"[cyan]{text}[/]")) if console else (lambda text: log.info(text))
            adapted = _adapt_models(model, [it.dataset for it in items], adapt, str(pairs) if pairs else None,
                                    per_channel, out_dir, time_budget_s=opts.adapt_time_s, n_frames=opts.adapt_frames,
                                    seed=opts.seed, device=device,
                                    resume=resume, overwrite=overwrite, dry_run=dry_run, notes=notes,
                                    warnings=summary.warnings, status=status, show_progress=console is not None)
            if not dry_run:
                refs = adapted.refs
                summary.adapted = list(adapted.saved)
            adapt_info = {"mode": adapt, "base": base_ref.describe(), "per_channel": per_channel,
                          **({"pairs": str(pairs)} if adapt == "pairs" else {"frames": opts.adapt_frames}),
                          "time_budget_s": opts.adapt_time_s, "saved": list(adapted.saved), "fits": adapted.fits}
        summary.models = [r.describe() for r in refs]
        summary.notes = notes
        if dry_run:
            notes.append("the noise model is fitted to each input and channel when the run starts"
                         + (f" (camera calibration {calibration})" if calibration else ""))
            summary.elapsed_s = time.perf_counter() - t_start
            return summary
        # -- 4b. noise model per input and channel, checked before any output exists ---------------
        cal_obj = None
        if calibration is not None:
            from livedenoise.camera_calibration import CameraCalibration

            cal_obj = CameraCalibration.load(calibration)
        for it in list(items):
            if noise_model == "stored" or (it.summary is not None and it.summary.status == "already complete"):
                continue
            try:
                it.refs = _fit_item_refs(it, refs, calibration=cal_obj, calibration_path=calibration,
                                         averaged=frames_averaged, strict=opts.strict, summary=summary)
            except InputDataError as exc:
                if not multi:
                    raise _named(it.item.path, exc) from None
                _skip_input(summary, it.item.path, exc, it)
                items.remove(it)
                it.dataset.close()
        summary.models = [r.describe() for it in items for r in (it.refs or refs)][:16]
        if items:
            # load once here, as the workers will: a corrupt checkpoint fails before any output exists
            for r in refs:
                if r.noise_json is None:
                    get_denoiser(r, items[0].plan.denoiser)  # type: ignore[union-attr]

        # -- 5. run ------------------------------------------------------------------------------
        t_axis_of = lambda ds: ds.axes.index("T") if (temporal and "T" in ds.axes[:-2]) else None  # noqa: E731
        run = _Run(opts, refs, policies, adapt_info, t_axis_of, summary)
        try:
            _run_items(run, items, console, client, concurrency, keep_going=multi)
        finally:
            forget_datasets(run.opened)
            for it in items:
                it.dataset.close()
        summary.elapsed_s = time.perf_counter() - t_start
        if summary.failed:
            n = len(expanded)
            listed = "; ".join(f"{f['input']}: {f['error']}" for f in summary.failed[:5])
            more = f"; and {len(summary.failed) - 5} more" if len(summary.failed) > 5 else ""
            raise BatchIncomplete(
                f"{len(summary.failed)} of {n} inputs could not be denoised ({listed}{more}); the other "
                f"{n - len(summary.failed)} were written to {out_dir}.", summary)
        return summary


@dataclass
class _Run:
    """What every input of a running job shares: the models, output policies, where blocks run, the display."""

    options: BatchOptions
    refs: list[ModelRef]
    policies: dict[Path, np.dtype]
    adapt_info: dict[str, Any] | None
    t_axis_of: Callable[[ImageDataset], int | None]
    summary: BatchSummary
    #: inputs lent to the block workers, forgotten when the job ends
    opened: list[tuple[SourceSpec, tuple[int, int]]] = field(default_factory=list)
    bar: Any = None
    runner: Any = None


def _run_items(run: _Run, items: list[_Item], console: Any, client: Any, concurrency: int, *,
               keep_going: bool = False) -> None:
    """Process every item in turn (outputs, blocks, finalisation).

    ``keep_going``: an input that fails (a NaN frame, a truncated plane) is named in ``summary.failed``
    and the next one is processed; its finished blocks stay resumable. Interrupts always stop the batch.
    """
    with _Progress(console is not None, items, console) as run.bar, _Runner(client, concurrency) as run.runner:
        for n, it in enumerate(items):
            assert it.plan is not None and it.summary is not None
            if it.summary.status == "already complete":
                continue
            try:
                _run_item(run, n, it)
            except (InputDataError, OSError) as exc:
                if not keep_going:
                    # one sentence that names the file (a NaN frame's message alone does not)
                    raise InputDataError(f"{it.item.path}: {_failure_text(it.item.path, exc)}") from None
                _skip_input(run.summary, it.item.path, exc, it)


def _failure_text(path: Path, exc: BaseException) -> str:
    """The reason an input failed, without repeating its path: our sentence, or the OS error's."""
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}; the finished blocks are kept for --resume"
    return str(exc).replace(f"{path}: ", "")


def _named(path: Path, exc: InputDataError) -> InputDataError:
    """``exc`` with the input's path in front where its sentence does not name the file (a noise fit's checks speak
    of "the image"; the one input of a run is then the file in question)."""
    if str(path) in str(exc):
        return exc
    return type(exc)(f"{path}: {exc}")


def _skip_input(summary: BatchSummary, path: Path, exc: BaseException, it: _Item | None = None) -> None:
    """Record an input that could not be denoised (named, with its one-sentence reason) and log it."""
    text = _failure_text(path, exc)
    summary.failed.append({"input": str(path), "error": text})
    if it is not None and it.summary is not None:
        it.summary.status = "failed"
    if it is not None and it.manifest.exists():
        try:  # finished blocks stay resumable; a repaired input starts again (see _prepare_output)
            it.manifest.load()
            it.manifest.data["state"] = "failed"
            it.manifest.data["error"] = text
            it.manifest.save()
        except (LivedenoiseError, OSError):
            pass
    log.error("%s: %s (skipped; the other inputs go on)", path, text.rstrip("."))


def _run_item(run: _Run, n: int, it: _Item) -> None:
    """One input: output prepared (or resumed), every unfinished block denoised, output finalised."""
    assert it.plan is not None and it.summary is not None
    opts, bar = run.options, run.bar
    out_dtype = run.policies[it.item.path]
    item_refs = it.refs or run.refs
    prov = _provenance(it, item_refs, run.adapt_info, out_dtype, opts.dtype, opts.fmt)
    target = _prepare_output(it, item_refs, prov, out_dtype, opts.fmt, overwrite=opts.overwrite, resume=opts.resume)
    run.opened.append(share_dataset(it.dataset))
    stamp = run.opened[-1][1]
    done = it.manifest.done()
    _verify_resumed_input(it, done)
    it.summary.blocks_resumed = len(done)
    clipped = [sum(int(r.get("clipped", 0)) for r in done.values())]
    c_axis = it.dataset.axes.index("C") if (len(item_refs) > 1 and "C" in it.dataset.axes) else None
    jobs = (BlockJob(i, rng, it.dataset.spec, tuple(item_refs), c_axis, run.t_axis_of(it.dataset), it.plan.denoiser,
                     out_dtype.str, target, stamp, it.plan.context) for i, rng in it.plan.blocks() if i not in done)
    bar.start_item(n, len(done))
    t0 = time.perf_counter()

    def on_done(result: BlockResult, it: _Item = it, n: int = n, clipped: list[int] = clipped) -> None:
        it.manifest.record(result)
        assert it.summary is not None
        it.summary.frames += result.frames
        it.summary.pixels += result.pixels
        clipped[0] += result.clipped
        bar.advance(n, result)
        if opts.on_block_done is not None:
            opts.on_block_done(result)

    def after_error(result: BlockResult, it: _Item = it) -> None:
        it.manifest.record(result)

    run.runner.run(jobs, on_done, after_error)
    it.summary.seconds = time.perf_counter() - t0  # wall time: throughput includes I/O
    it.summary.clipped = clipped[0]
    prov["quality_check"] = _combined_check(it, run.summary)
    _finalize(it, prov, opts.fmt, out_dtype)
    it.summary.status = "done"
    if it.summary.clipped:
        total = int(np.prod(it.dataset.shape, dtype=np.int64))
        msg = (f"{it.output}: {it.summary.clipped} of {total} pixels ({100 * it.summary.clipped / total:.3g}%) were "
               f"outside the {out_dtype.name} range and were clipped; use --dtype float32 to keep them.")
        log.warning(msg)
        run.summary.warnings.append(msg)


def _fit_item_refs(it: _Item, refs: list[ModelRef], *, calibration: Any, calibration_path: Any, averaged: int,
                   strict: bool, summary: BatchSummary) -> list[ModelRef]:
    """One ref per channel of ``it`` with the noise model fitted to that channel, checked on a sample frame."""
    from livedenoise.dataset_noise import fit_dataset_noise
    from livedenoise.normalization import Normalizer
    from livedenoise.residual_check import check_residual

    ds = it.dataset
    n_c = ds.size("C")
    channels: list[int | None] = list(range(n_c)) if n_c > 1 else [None]
    out: list[ModelRef] = []
    checks: list[dict[str, Any]] = []
    for ch in channels:
        base = refs[ch] if (len(refs) > 1 and ch is not None) else refs[0]
        stored = json.loads(base.normalizer_json or "{}")
        if not stored:  # a bare in-process model without a normaliser, or a Model Zoo one: nothing to fit against
            from livedenoise.bioimageio_import import FOREIGN_ARCH

            if base.arch == FOREIGN_ARCH:
                if it.summary is not None:
                    it.summary.noise_model = ("none fitted: a BioImage Model Zoo model, run on the raw values with "
                                              "its own pre- and post-processing")
                unused = [flag for flag, given in (("--camera-calibration", calibration is not None),
                                                   ("--frames-averaged", averaged != 1), ("--strict", strict))
                          if given]
                msg = (f"{', '.join(unused)} not used with {base.name!r}: a BioImage Model Zoo model of another tool "
                       "has no noise model to calibrate or check") if unused else ""
                if msg and msg not in summary.warnings:
                    summary.warnings.append(msg)
            out.append(base)
            continue
        where = f"{it.item.path}" + (f" channel {ch}" if ch is not None else "")
        fit, frames = fit_dataset_noise(ds, ch, Normalizer.from_dict(stored), calibration=calibration,
                                        averaged=averaged)
        for w in fit.warnings:
            msg = f"{where}: {w}"
            if msg not in summary.warnings:
                summary.warnings.append(msg)
        ref = ModelRef(**{**asdict(base), "channel": ch if ch is not None else base.channel,
                          "noise_json": json.dumps(fit.to_dict(), sort_keys=True),
                          "calibration": (str(Path(calibration_path).resolve()) if fit.normalizer.has_pixel_maps
                                          else None),
                          "passthrough": not fit.in_range})
        line = fit.describe() + (f" [channel {ch}]" if ch is not None else "")
        if it.summary is not None:
            it.summary.noise_model = "; ".join(filter(None, [it.summary.noise_model, line]))
        if ref.passthrough:
            summary.warnings.append(
                f"{where}: copied unchanged instead of denoised (signal above the backbone's range)")
        else:
            denoiser = get_denoiser(ref, it.plan.denoiser)  # type: ignore[union-attr]
            den = _model_thread().submit(denoiser.denoise, frames[0]).result()
            check = check_residual(frames[0], den, denoiser.normalizer)
            checks.append({"channel": ch, **check.to_dict()})
            if not check.ok:
                msg = f"{where}: {check.message}"
                if strict:
                    raise LivedenoiseError(f"{msg}. Refusing to denoise (--strict); give a camera calibration "
                                           "(--camera-calibration) or run without --strict to write it with this "
                                           "warning.")
                log.warning(msg)
                summary.warnings.append(msg)
        out.append(ref)
    it.preflight = {"checks": checks}
    return out


def _combined_check(it: _Item, summary: BatchSummary) -> dict[str, Any] | None:
    """The residual checks of every block of ``it`` (and the pre-flight one) in one verdict for the provenance."""
    from livedenoise.residual_check import ResidualCheck

    records = [r["check"] for r in it.manifest.done().values() if r.get("check")]
    if not records:
        return it.preflight
    fields: list[dict[str, Any]] = [{k: (float("nan") if v is None else v) for k, v in r.items() if k != "message"}
                                    for r in records]
    checks = [ResidualCheck(**f) for f in fields]
    combined = ResidualCheck.combine(checks)
    bad = sum(1 for c in checks if not c.ok)
    out = {**combined.to_dict(), "blocks_checked": len(checks), "blocks_failed": bad,
           "preflight": (it.preflight or {}).get("checks")}
    if bad:
        msg = f"{it.output}: {bad} of {len(checks)} checked blocks failed the residual check: {combined.message}"
        if msg not in summary.warnings:
            log.warning(msg)
            summary.warnings.append(msg)
    return out


def _prepare_output(it: _Item, refs: list[ModelRef], prov: dict[str, Any], out_dtype: np.dtype, fmt: str, *,
                    overwrite: bool, resume: bool) -> OmeTiffTarget | OmeZarrTarget | NpyBlockTarget:
    """Create the output and its manifest, or check them against this run when resuming."""
    assert it.plan is not None
    ds = it.dataset
    m = it.manifest
    expected = {
        "input": ds.fingerprint(),
        "models": [{"name": r.name, "sha256": r.sha256, "channel": r.channel,
                    **({"normalizer": json.loads(r.noise_json)["normalizer"]} if r.noise_json else {})} for r in refs],
        "settings": {"dtype": out_dtype.name, "format": fmt, "axes": ds.axes, "shape": list(ds.shape)},
    }
    if resume and m.exists() and m.load().get("state") == "creating":
        overwrite = True  # stopped while the empty output was being created: nothing to keep
    if resume and m.exists() and m.load().get("state") == "failed" and m.data.get("input") != expected["input"]:
        overwrite = True  # the input that failed (a NaN frame, a bad plane) was repaired: start it again
    if resume and m.exists() and not overwrite:
        data = m.load()
        for key, what in (("input", "the input changed"), ("models", "the model differs"),
                          ("settings", "the output settings (dtype / format / axes) differ")):
            if data.get(key) != expected[key]:
                raise LivedenoiseError(
                    f"Cannot resume {it.output}: {what} since the interrupted run ({m.path} records "
                    f"{_short(data.get(key))}, now {_short(expected[key])}); pass --overwrite to start again."
                )
        # the partial output is where this output folder keeps it now, not where the record says it was made: the
        # job may be resumed from another working folder (the record's path was relative to the first one), or the
        # output folder copied or renamed since
        if fmt == "ome-tiff":
            t = data["target"]
            tiff = OmeTiffTarget(str(m.partial), t["axes"], tuple(t["shape"]), t["dtype"], tuple(t["offsets"]))
            tiff.check()
            target: OmeTiffTarget | OmeZarrTarget | NpyBlockTarget = tiff
        elif fmt == "ome-zarr":
            t = data["target"]
            target = OmeZarrTarget(str(m.partial_zarr), t["axes"], tuple(t["shape"]), t["dtype"], t.get("token", ""))
            target.check()
        else:
            target = NpyBlockTarget(str(m.staging), out_dtype.str)
            m.staging.mkdir(parents=True, exist_ok=True)
        return target
    if overwrite:
        # An earlier complete output stays until the new one replaces it (renamed over it when complete).
        m.remove()
    # the manifest comes first: from now on an interruption leaves a resumable state
    m.data = {"manifest_version": MANIFEST_VERSION, "state": "creating", "created": _now(), **expected,
              "output": str(it.output),
              "plan": {"chunks": list(it.plan.chunks), "bytes_per_block": it.plan.bytes_per_block,
                       "denoiser": asdict(it.plan.denoiser), "context": list(it.plan.context)}}
    m.save()
    try:
        it.output.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "ome-tiff":
            target = create_ome_tiff(m.partial, ds, out_dtype, prov)
            m.data["target"] = {"path": target.path, "axes": target.axes, "shape": list(target.shape),
                                "dtype": target.dtype, "offsets": list(target.offsets)}
        elif fmt == "ome-zarr":
            remove_path(m.partial_zarr)
            target = create_ome_zarr(m.partial_zarr, ds, out_dtype, prov)
            m.data["target"] = {"path": target.path, "axes": target.axes, "shape": list(target.shape),
                                "dtype": target.dtype, "token": target.token}
        else:
            m.staging.mkdir(parents=True, exist_ok=True)
            target = NpyBlockTarget(str(m.staging), out_dtype.str)
        m.data["state"] = "running"
        m.save()
    except BaseException:
        remove_path(m.partial)  # nothing half-made stays behind without its resume record
        remove_path(m.partial_zarr)
        m.remove()
        raise
    return target


def _verify_resumed_input(it: _Item, done: dict[int, dict[str, Any]]) -> None:
    """Re-read the input of every block finished by the interrupted run and compare its digest; refuse on change."""
    assert it.plan is not None
    for i, ranges in it.plan.blocks():
        recorded = done.get(i, {}).get("input")
        if recorded is None:
            continue
        key = (*tuple(slice(a, b) for a, b in ranges), slice(None), slice(None))
        if block_digest(np.asarray(it.dataset.reader[key])) != recorded:
            raise LivedenoiseError(
                f"Cannot resume {it.output}: the input {it.item.path} changed since the interrupted run (the pixels of "
                f"block {i}, already denoised, differ); pass --overwrite to start again.")


def _check_output_space(out_dir: Path, outputs: list[tuple[ImageDataset, np.dtype]]) -> None:
    """The output folder is writable and has room for every output (sized from the inputs), before any model loads."""
    ensure_room(out_dir, sum(int(np.prod(ds.shape, dtype=np.int64)) * dt.itemsize for ds, dt in outputs))


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _finalize(it: _Item, prov: dict[str, Any], fmt: str, out_dtype: np.dtype) -> None:
    """Final provenance; NDTiff assembly from the staged blocks; mark the manifest complete."""
    assert it.plan is not None and it.summary is not None
    m = it.manifest
    done = m.done()
    missing = [i for i in range(it.plan.n_blocks) if i not in done]
    if missing:
        raise LivedenoiseError(f"{it.output}: {len(missing)} block(s) were not written; rerun with --resume.")
    prov = {**prov, "completed": _now(), "clipped_pixels": it.summary.clipped}
    if fmt == "ome-tiff":
        update_ome_provenance(m.partial, prov)
        os.replace(m.partial, it.output)
    elif fmt == "ome-zarr":
        update_zarr_provenance(m.partial_zarr, prov)
        forget_open_arrays(m.partial_zarr)
        # a folder cannot be renamed over another: an earlier output steps aside first and goes only once the new
        # one carries the name (an interruption in between leaves both, never neither)
        old = m.partial_zarr.with_name(m.partial_zarr.name.replace(".partial.", ".previous."))
        remove_path(old)
        if it.output.exists():
            os.replace(it.output, old)
        os.replace(m.partial_zarr, it.output)
        remove_path(old)
    else:
        m.data["state"] = "assembling"
        m.save()
        remove_path(m.assembling)
        plan = it.plan
        staging = NpyBlockTarget(str(m.staging), out_dtype.str)

        def frames() -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
            for i, ranges in plan.blocks():
                block = np.load(staging.block_path(i), mmap_mode="r")
                for idx in itertools.product(*(range(a, b) for a, b in ranges)):
                    local = tuple(j - a for j, (a, _) in zip(idx, ranges, strict=True))
                    yield idx, np.array(block[local])
                del block

        write_ndtiff(m.assembling, it.dataset, frames(), prov)
        remove_path(it.output)
        os.replace(m.assembling, it.output)
        remove_path(m.staging)
    m.data["state"] = "complete"
    m.data["completed"] = _now()
    m.data["summary"] = {"clipped": it.summary.clipped}
    m.save()
