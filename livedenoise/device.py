"""Choose the torch device that runs the networks, and say so in the log.

Users of peer tools complain about *silent* CPU fallbacks (a job that should take a minute on
the GPU takes an hour on the CPU without a word). So ``"auto"`` picks the best device present
and logs it with its name, while an explicit request for a device that is not there is an error,
never a quiet downgrade.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

from livedenoise.errors import ConfigError, LivedenoiseError

log = logging.getLogger("livedenoise")

#: Values accepted by :func:`select_device` besides ``"cuda:N"``.
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def describe_device(device: torch.device) -> str:
    """A human-readable name for ``device`` (GPU model, or the CPU thread count)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"{device.type}:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} torch threads, {os.cpu_count()} logical cores)"


def select_device(preference: str | torch.device = "auto") -> torch.device:
    """Return the torch device to use and log the choice.

    ``"auto"`` prefers CUDA, then Apple MPS, then the CPU. ``"cpu"``, ``"cuda"``, ``"cuda:N"``
    and ``"mps"`` are taken literally: when the requested accelerator is missing a
    :class:`~livedenoise.errors.LivedenoiseError` is raised instead of falling back silently.
    """
    if isinstance(preference, torch.device):
        preference = str(preference)
    choice = str(preference).strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
        elif _mps_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
        log.info("Using device %s (chosen automatically)", describe_device(device))
        return device
    if choice == "cpu":
        device = torch.device("cpu")
    elif choice == "cuda" or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise LivedenoiseError(
                f"Device {preference!r} was requested but no CUDA GPU is available to this torch build "
                f"(torch {torch.__version__}); use device 'auto' or 'cpu'."
            )
        try:
            device = torch.device(choice)
        except RuntimeError as exc:
            raise ConfigError(f"Device {preference!r} is not a valid CUDA device name; "
                              "expected 'cuda' or 'cuda:N'.") from exc
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise LivedenoiseError(
                f"Device {preference!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
        device = torch.device("cuda", index)
    elif choice == "mps":
        if not _mps_available():
            raise LivedenoiseError(
                f"Device {preference!r} was requested but Apple MPS is not available here; use device 'auto' or 'cpu'."
            )
        device = torch.device("mps")
    else:
        raise ConfigError(
            f"Device {preference!r} is not recognised; expected one of {', '.join(DEVICE_CHOICES)} or 'cuda:N'."
        )
    log.info("Using device %s (as requested)", describe_device(device))
    return device


def cpu_threads_available() -> int:
    """Logical cores this process may run on (respects CPU affinity / container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def configure_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count without oversubscribing the machine.

    torch defaults to the number of *hardware* cores, which can exceed what a container or an
    affinity mask allows; each extra thread then only adds contention with the acquisition
    threads. ``threads=None`` caps torch at the cores actually available; an explicit number is
    used as given. Note that this setting is process-wide. Returns the thread count in effect.
    """
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"CPU thread count {threads} is invalid; expected a positive integer.")
        torch.set_num_threads(int(threads))
    else:
        available = cpu_threads_available()
        if torch.get_num_threads() > available:
            torch.set_num_threads(available)
    return torch.get_num_threads()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16_matrix_units() -> bool:
    """Whether the CPU multiplies bf16 matrices in hardware (Intel AMX), where bf16 inference pays most.

    Measured on a 2-core Intel Xeon with AMX (2026-12-05, ``benchmarks/results/2026-12-05-xeon-amx/``): the fast
    backbone took 28 ms per 512² frame in bf16 against 63 ms in fp32, the standard one 68 against 216 ms, at
    -0.02 dB mean on the dev pairs; on an AMD EPYC with AVX-512 BF16 but no AMX, 1.9-2x.
    """
    return "amx_bf16" in cpu_flags()


#: The one-line hint :func:`hint_bf16` logs, once per process.
BF16_HINT = ("this CPU has Intel AMX (bf16 matrix units): --precision bf16 ([live] precision = \"bf16\") ran the "
             "backbones 2.3-3.2x faster than fp32 on such a CPU, -0.02 dB mean on the dev pairs, outputs within 5e-2 "
             "of the range of fp32's (README \"Precision: bf16 on the CPU\")")


@functools.cache
def hint_bf16() -> bool:
    """Log :data:`BF16_HINT` once per process where the CPU has bf16 matrix units; return whether it did.

    Why not bf16 by default there: outputs must equal the fp32 reference within 1e-3 of the range whatever runs
    them, and bf16 differs by more, so it stays the user's choice, made known where it pays.
    """
    if cpu_has_bf16_matrix_units():
        log.info("%s", BF16_HINT)
        return True
    return False
