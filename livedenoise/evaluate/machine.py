"""The machine an evaluation or benchmark ran on, recorded with every result and named in every report."""
from __future__ import annotations

import datetime as _dt
import os
import platform

import numpy as np


def machine_info(device: str | None = None) -> dict:
    """CPU model, cores, memory, accelerator, library versions and date: printed with every figure."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    from livedenoise import __version__

    try:
        load = [round(x, 2) for x in os.getloadavg()]  # other work on the machine skews every timing
    except (AttributeError, OSError):  # pragma: no cover
        load = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu, "cores": cores, "memory_gb": mem_gb, "gpu": gpu, "device": device,
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "numpy": np.__version__, "livedenoise": __version__,
        "load_average": load,
    }


def describe_machine(info: dict) -> str:
    """One line: CPU (cores), GPU, torch, date."""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ", no GPU"
    load = info.get("load_average")
    busy = f"; load average {load[0]:g} at the end" if load else ""
    return (f"{info['cpu']} ({info['cores']} cores, {info.get('memory_gb')} GB){gpu}; torch {info['torch']} "
            f"({info['torch_threads']} threads); {info['platform']}; {info['date']}{busy}")
