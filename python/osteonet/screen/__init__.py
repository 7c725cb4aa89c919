"""Opportunistic osteoporosis and fracture screening of a CT, per vertebra (issue 16; docs/screen.md).

``screen(ct, out, masks=..., body_mask=..., labels=...)`` reads a CT (DICOM series or NIfTI, HU) and a
vertebra label map (or segments the vertebrae itself), measures every vertebra in view with the C++ core
(include/osteonet/screen: body, trabecular ROI, HU statistics, BMD, ACR class, volume, heights along the
vertebra's own axes, height loss, Genant grade), screens L1 against Pickhardt's thresholds, and writes
report.json, vertebrae.csv, report.png, report.html, NIfTI masks and, for DICOM input, a DICOM SEG and
SR. Research software, not a medical device.
"""

from .calibration import Calibration, from_phantom, linear, parse_calibration, phantomless
from .inputs import CTVolume, read_ct, read_label_map
from .labels import BUILTIN_TABLES, LEVELS, SCREENED_LEVELS, LabelTable, load_table
from .measure import ACR_NAMES, GENANT_NAMES, l1_screen, measure
from .pipeline import OUTPUT_FILES, screen
from .report import DISCLAIMER, REPORT_SCHEMA, REPORT_VERSION, THRESHOLDS

__all__ = ["screen", "measure", "read_ct", "read_label_map", "CTVolume", "load_table", "LabelTable", "BUILTIN_TABLES",
           "LEVELS", "SCREENED_LEVELS", "Calibration", "phantomless", "linear", "parse_calibration", "from_phantom",
           "l1_screen", "ACR_NAMES", "GENANT_NAMES", "OUTPUT_FILES", "REPORT_SCHEMA", "REPORT_VERSION", "THRESHOLDS",
           "DISCLAIMER", "genant_grade", "pickhardt_profile"]


def genant_grade(height_loss: float) -> int:
    """Genant grade of a height loss fraction: 0 < 20 %, 1 20-25 %, 2 25-40 %, 3 > 40 %."""
    from .. import _core

    return int(_core.screen.genant_grade(float(height_loss)))


def pickhardt_profile(l1_hu: float) -> str:
    """'osteoporosis_likely' (<= 110 HU), 'low_bmd_possible' (<= 160 HU) or 'osteoporosis_unlikely'."""
    from .. import _core

    return str(_core.screen.pickhardt_profile(float(l1_hu)))
