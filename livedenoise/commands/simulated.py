"""livedenoise's acquisition backends on the simulated core, with what only the simulator knows injected.

The backends are generic (they run real microscopes); the simulator never imports livedenoise. This command-layer
module is where the two meet: it gives a backend the simulated light-power control, the ground truth of every frame
and a label, the way pymmcore-plus's simulator patches itself onto a core that does not know it. The ground truth is
the sample as a camera without fixed pattern would record it: the pattern is noise the backbone removes, so scores
against the camera's own expected image would reward keeping it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from livedenoise.acquisition.pycromanager_backend import PycromanagerBackend
from livedenoise.acquisition.pymmcore_plus_backend import PymmcorePlusBackend
from simulators.core import light_power_event, light_power_property, truth_of

if TYPE_CHECKING:
    from simulators.core import SimulatedCore

LABEL = "simulated microscope"


def pycromanager_backend(core: SimulatedCore) -> PycromanagerBackend:
    """A ``PycromanagerBackend`` on the simulated core: light power, ground truth and label injected."""
    return PycromanagerBackend(core, light_event=lambda power: light_power_event(core, power),
                               ground_truth=truth_of(core, fixed_pattern=False), label=LABEL)


def pymmcore_plus_backend(core: SimulatedCore) -> PymmcorePlusBackend:
    """A ``PymmcorePlusBackend`` on the simulated core: light power, ground truth and label injected."""
    return PymmcorePlusBackend(core, light_property=light_power_property(),
                               ground_truth=truth_of(core, fixed_pattern=False), label=LABEL)
