"""Post-hoc denoising of saved datasets, block by block, with bounded memory, resumable, on dask.

How a run goes (:func:`denoise_dataset`):

1. **Validate everything before writing anything**: inputs open lazily (metadata only), the
   model loads, output names are free and outside every input, the dtype/format policy is
   consistent. A user error here leaves the output folder untouched.
2. **Plan** (:func:`plan_blocks`): the leading axes (everything but Y, X) are cut into
   hyper-rectangular blocks so that one block -- its input, the float32 result and the cast copy
   -- plus the network's working memory fits ``memory_budget / concurrent blocks``. The network's
   share is enforced through the Denoiser's pixel budget (tile size and frames per call), so the
   model, not only the data, stays within the budget.
3. **Preallocate** the output and write a **manifest** (the resume marker): input fingerprint,
   model sha256, settings, block plan, output layout. Every finished block is appended to a
   ``.done.jsonl`` log *after* its pixels were written and fsynced.
4. **Run** the blocks on a local thread pool or an existing ``dask.distributed`` cluster; each
   task re-opens the input and the model *from their paths* (never pickled torch modules),
   reads its block, denoises, casts, writes it in place, and returns counts.
5. **Finalize**: provenance gets the final counts; NDTiff outputs are assembled from the staged
   blocks; the manifest says ``complete``.

``--resume`` re-reads the manifest, refuses if the input, model or settings changed, and runs
only the blocks not in the log: the output is identical to an uninterrupted run (blocks are
independent and deterministic). ``--overwrite`` removes a previous output first.

The package's modules follow that order: :mod:`~livedenoise.batch.options` (what was asked),
:mod:`~livedenoise.batch.models` (which model, loaded how), :mod:`~livedenoise.batch.planning`,
:mod:`~livedenoise.batch.block` (one block), :mod:`~livedenoise.batch.manifest` (resume),
:mod:`~livedenoise.batch.execution` (threads or dask), :mod:`~livedenoise.batch.adaptation`,
:mod:`~livedenoise.batch.summary`, :mod:`~livedenoise.batch.progress`, and :mod:`~livedenoise.batch.job`,
which runs them.
"""
from __future__ import annotations

from livedenoise.batch.block import BlockJob, BlockResult, cast_output, denoise_block, process_block, source_stamp
from livedenoise.batch.job import denoise_dataset
from livedenoise.batch.manifest import STATE_DIR, Manifest
from livedenoise.batch.models import (
    DenoiserOptions,
    ModelRef,
    default_model_for,
    file_sha256,
    get_denoiser,
    is_time_lapse,
    resolve_model,
)
from livedenoise.batch.options import DTYPES, FORMATS, NOISE_MODELS, BatchOptions, parse_memory
from livedenoise.batch.planning import (
    CALL_BYTES_PER_PIXEL,
    EXTRA_BYTES_PER_PIXEL,
    MIN_CALL_PIXELS,
    MIN_TILE_CORE,
    BlockPlan,
    plan_blocks,
)
from livedenoise.batch.summary import BatchSummary, ItemSummary
from livedenoise.io import NpyBlockTarget
from livedenoise.models import ACTIVATION_BYTES_PER_PIXEL_CHANNEL

__all__ = [
    "ACTIVATION_BYTES_PER_PIXEL_CHANNEL",
    "CALL_BYTES_PER_PIXEL",
    "DTYPES",
    "EXTRA_BYTES_PER_PIXEL",
    "FORMATS",
    "MIN_CALL_PIXELS",
    "MIN_TILE_CORE",
    "NOISE_MODELS",
    "STATE_DIR",
    "BatchOptions",
    "BatchSummary",
    "BlockJob",
    "BlockPlan",
    "BlockResult",
    "DenoiserOptions",
    "ItemSummary",
    "Manifest",
    "ModelRef",
    "NpyBlockTarget",
    "cast_output",
    "default_model_for",
    "denoise_block",
    "denoise_dataset",
    "file_sha256",
    "get_denoiser",
    "is_time_lapse",
    "parse_memory",
    "plan_blocks",
    "process_block",
    "resolve_model",
    "source_stamp",
]
