"""Choose the torch device that runs the networks, and say so in the log.

Users of peer tools complain about *silent* CPU fallbacks (a job that should take a minute on
the GPU takes an hour on the CPU without a word). So ``"auto"`` picks the best device present
and logs it with its name, while an explicit request for a device that is not there is an error,
never a quiet downgrade.
"""
from __future__ import annotations

import logging
import os

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
