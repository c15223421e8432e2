"""Cutting a dataset into blocks that fit the memory budget, network working memory included."""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from livedenoise.batch.models import DenoiserOptions
from livedenoise.diskspace import format_bytes as _format_bytes
from livedenoise.errors import ConfigError
from livedenoise.models import ACTIVATION_BYTES_PER_PIXEL_CHANNEL

#: Smallest kept centre of a tile (pixels per side); tiles are never narrower than 2 x margin + this.
MIN_TILE_CORE = 64
#: Frames smaller than this many pixels are batched (up to 4 per network call).
MIN_CALL_PIXELS = 256 * 256
#: Bytes per pixel of the frames of one Denoiser call (float32 input, normalised, padded and output copies).
CALL_BYTES_PER_PIXEL = 20
#: Bytes per pixel of per-block temporaries besides input and output (bool masks, finite checks).
EXTRA_BYTES_PER_PIXEL = 2




@dataclass(frozen=True)
class BlockPlan:
    """Hyper-rectangular blocks over the leading axes; ``chunks[i]`` is the block length along axis ``i``."""

    axes: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    bytes_per_block: int
    denoiser: DenoiserOptions
    #: Frames read beyond each side of a block along each leading axis (empty: none). A temporal network's block
    #: along T is read with its window's neighbours around it, so every frame is denoised as in the whole series,
    #: and only the block's own frames are written (:func:`read_ranges`).
    context: tuple[int, ...] = ()

    @property
    def lead_shape(self) -> tuple[int, ...]:
        return self.shape[:-2]

    @property
    def block_shape(self) -> tuple[int, ...]:
        return tuple(self.chunks) + tuple(self.shape[-2:])

    @property
    def frames_per_block(self) -> int:
        return int(np.prod(self.chunks, dtype=np.int64))

    # strict=False in the zips below: a resumed plan's chunks come from its manifest and may not fit a changed input;
    # that is reported as "the input changed" once the output is prepared, not as a ValueError here.
    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(math.ceil(n / c) for n, c in zip(self.lead_shape, self.chunks, strict=False))

    @property
    def n_blocks(self) -> int:
        return int(np.prod(self.grid, dtype=np.int64))

    def dask_chunks(self) -> tuple[tuple[int, ...], ...]:
        """The same plan as dask chunks (for ``ImageDataset.to_dask``)."""
        out = []
        for n, c in zip(self.lead_shape, self.chunks, strict=False):
            out.append(tuple(min(c, n - s) for s in range(0, n, c)))
        return (*tuple(out), (self.shape[-2],), (self.shape[-1],))

    def block(self, index: int) -> tuple[tuple[int, int], ...]:
        """``(start, stop)`` along each leading axis of block ``index`` (C order over the grid)."""
        pos = np.unravel_index(index, self.grid) if self.grid else ()
        return tuple((int(p) * c, min(int(p) * c + c, n))
                     for p, c, n in zip(pos, self.chunks, self.lead_shape, strict=False))

    def blocks(self) -> Iterator[tuple[int, tuple[tuple[int, int], ...]]]:
        for i in range(self.n_blocks):
            yield i, self.block(i)


def read_ranges(ranges: tuple[tuple[int, int], ...], context: Sequence[int],
                lead_shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``ranges`` widened by ``context`` frames on each side (none where ``context`` is empty), clipped to the data."""
    if not context:
        return tuple(ranges)
    return tuple((max(0, a - c), min(n, b + c)) for (a, b), c, n in zip(ranges, context, lead_shape, strict=True))


def plan_blocks(
    shape: Sequence[int],
    axes: str,
    in_dtype: np.dtype | str,
    out_dtype: np.dtype | str,
    memory_budget: int,
    *,
    concurrency: int = 1,
    split_axes: str = "",
    whole_axes: str = "",
    context_axes: str = "",
    context: int = 0,
    first_width: int = 32,
    margin: int = 0,
    weights_bytes: int = 0,
    window: int = 1,
    device: str = "auto",
    ensemble: int = 1,
    precision: str = "auto",
    second_pass: bool = True,
    compiled: bool = False,
) -> BlockPlan:
    """Largest blocks whose memory (data + network working set) fits ``memory_budget / concurrency``.

    The network gets its share first: a whole frame per call when that fits (tiles only cost
    time), otherwise the largest tiles that leave room for the smallest block, but never tiles
    whose kept centre is narrower than the two context ``margin``s around it (mostly margin: many
    times slower). The rest of the block's share holds frames. ``split_axes`` are cut into single
    slices (e.g. ``C`` with one model per channel), ``whole_axes`` must lie entirely in every
    block; ``context_axes`` (``T`` for temporal networks) are cut into blocks read with ``context`` more
    slices on each side (a temporal network's neighbours: each frame is then denoised as in the whole
    series, and memory does not grow with the number of time points; a block holding the whole axis
    reads nothing more). ``weights_bytes`` is memory held once for the whole job (network weights),
    ``window`` the frames per call of a temporal network. Blocks grow from the innermost leading axis
    outwards, so they are as contiguous on disk as possible.
    Raises :class:`ConfigError` when not even the smallest allowed block fits.
    """
    shape = tuple(int(s) for s in shape)
    in_item, out_item = np.dtype(in_dtype).itemsize, np.dtype(out_dtype).itemsize
    per_block = (int(memory_budget) - int(weights_bytes)) // max(1, int(concurrency))
    pixels = shape[-1] * shape[-2]
    lead = shape[:-2]
    lead_axes = axes[:-2]
    win = max(1, int(window))
    bpp_model = ACTIVATION_BYTES_PER_PIXEL_CHANNEL * max(1, first_width)

    def network_bytes(pixel_budget: int) -> int:
        # activations, plus the float32 copies (converted, normalised, padded, result) of one call's frames
        frames_per_call = max(1, min(4, pixel_budget // (pixels * win)))
        return pixel_budget * bpp_model + frames_per_call * pixels * win * CALL_BYTES_PER_PIXEL

    # Denoiser output is float32 in any case; a second copy only when casting to another dtype
    bytes_per_pixel = in_item + 4 + (out_item if np.dtype(out_dtype) != np.float32 else 0) + EXTRA_BYTES_PER_PIXEL
    frame_bytes = pixels * bytes_per_pixel
    need_whole = [i for i, a in enumerate(lead_axes) if a in whole_axes]
    ctx = [max(0, int(context)) if a in context_axes and a not in whole_axes else 0 for a in lead_axes]

    def read(i: int, chunk: int) -> int:  # slices read along axis i for a block of ``chunk``
        return chunk if chunk >= lead[i] else min(lead[i], chunk + 2 * ctx[i])

    minimum = int(np.prod([lead[i] if i in need_whole else read(i, 1) for i in range(len(lead))], dtype=np.int64))
    side = 2 * int(margin) + max(2 * int(margin), MIN_TILE_CORE)
    floor = min(pixels, side * side) * win
    batch_frames = min(4, max(1, MIN_CALL_PIXELS // pixels))  # small frames: several per call
    pixel_budget = pixels * win * batch_frames
    room = per_block - minimum * frame_bytes
    while network_bytes(pixel_budget) > room and pixel_budget > floor:
        pixel_budget = max(floor, int(pixel_budget * 0.8))
    model_mem = network_bytes(pixel_budget)
    data_budget = per_block - model_mem
    cap = data_budget // frame_bytes if data_budget > 0 else 0
    if cap < minimum:
        what = (f"a full {'/'.join(lead_axes[i] for i in need_whole)} stack of {minimum} frames" if need_whole
                else f"{minimum} frames (one and its {minimum - 1} temporal neighbours)" if minimum > 1
                else "one frame")
        need = concurrency * (minimum * frame_bytes + network_bytes(floor)) + weights_bytes
        raise ConfigError(
            f"Memory budget {_format_bytes(memory_budget)} is too small for {what} of {shape[-2]}x{shape[-1]} pixels "
            f"with {concurrency} block(s) in flight; expected at least {_format_bytes(need)} (--memory-budget)."
        )
    chunks = [1] * len(lead)
    for i in need_whole:
        chunks[i] = lead[i]

    def frames_read() -> int:
        return int(np.prod([read(i, c) for i, c in enumerate(chunks)], dtype=np.int64))

    for i in reversed(range(len(lead))):
        if i in need_whole or lead_axes[i] in split_axes:
            continue
        fit = cap // (frames_read() // read(i, chunks[i]))  # slices along i that fit beside the other axes' blocks
        if fit >= lead[i]:
            chunks[i] = lead[i]
            continue
        chunks[i] = max(1, int(fit) - 2 * ctx[i])  # read with its context: fit slices at most
        break
    block_bytes = frames_read() * frame_bytes + model_mem
    return BlockPlan(axes, shape, tuple(chunks), int(block_bytes),
                     DenoiserOptions(device=device, pixel_budget=int(pixel_budget), batch_size=batch_frames,
                                     ensemble=int(ensemble), precision=str(precision),
                                     second_pass=bool(second_pass), compiled=bool(compiled)),
                     tuple(ctx) if any(ctx) else ())
