"""The task contract: what every task (classification, detection, ovf, segmentation, bmd, hip) says and
does, so that one command line, one runner and the reproductions drive all of them the same way.

A task declares its **options** (name, type, default, help; the command line's common flags and
``--set key=value`` set them, anything else is refused in one line), its **data layout** (a validator
that raises one line naming the file and the field, and a reader), how it **splits** (by patient or
source id where the layout has one, stratified), how it **trains** (stages of osteonet.train.Trainer,
each resumable), how it **evaluates** (metrics with 95 % intervals, per-sample predictions, pictures),
how it **predicts** on a real input (JSON + PNG, masks as NIfTI in the input's geometry) and how it
**rebuilds** its models from the model card. docs/tasks.md describes each task.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._errors import nearest

__all__ = ["Option", "Samples", "Task", "load_init_weights"]


@dataclasses.dataclass(frozen=True)
class Option:
    """One task option: ``kind`` is int, float, str, bool, list (of str; "a,b" on the command line),
    dict (JSON on the command line) or choice (one of ``choices``); ``nullable`` allows None ("none")."""

    default: Any
    kind: str
    help: str
    choices: Tuple[Any, ...] = ()
    minimum: Optional[float] = None
    nullable: bool = False


@dataclasses.dataclass
class Samples:
    """What a task's reader gives: one entry per sample (an image, a scan or a slice).

    ``ids``: a stable name per sample (its path relative to the folder); ``groups``: the patient or
    source id it belongs to (``group_column`` names the field; without one every sample is its own
    group); ``strata``: the label the split is stratified by; ``rows``: the layout's records;
    ``info``: what the task read once for all samples (classes, label table, annotations...)."""

    folder: str
    ids: List[str]
    groups: List[str]
    strata: List[Any]
    rows: List[Dict[str, Any]]
    group_column: Optional[str] = None
    info: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def counts(self, indices: Optional[Sequence[int]] = None) -> Dict[str, Any]:
        idx = range(len(self)) if indices is None else list(indices)
        out: Dict[str, Any] = {"samples": len(idx), "groups": len({self.groups[i] for i in idx})}
        labels = [self.strata[i] for i in idx]
        if labels and all(isinstance(v, str) and v for v in labels):
            out["by_label"] = {k: labels.count(k) for k in sorted(set(labels))}
        return out


def load_init_weights(model: Any, path: str, where: str) -> Dict[str, Any]:
    """Starts ``model`` from a registered weights tag (``"imagenet"``, see osteonet.weights) or the tensors of
    a file (a state dict, e.g. torchvision's pretrained weights, or an osteonet checkpoint) whose names and
    shapes fit; the rest (a new head) keeps its initialisation. Returns what was loaded (for the model
    card); nothing fitting raises one ValueError."""
    from ..weights import load_pretrained

    info = load_pretrained(model, path, f"{where}: init_weights")
    return {k: info[k] for k in ("weights", "tensors_loaded", "model_tensors")}


#: the tasks' ``init_weights`` option
INIT_WEIGHTS = Option(None, "str", "start the backbone from a registered weights tag (imagenet: osteonet weights list) or a "
                                   "file (a state dict with torchvision's names or an osteonet checkpoint); tensors that "
                                   "fit are loaded", nullable=True)


def init_weights_options(init_weights: Optional[str], model_name: str, config: Dict[str, Any]) -> Dict[str, Any]:
    """The model options a registered weights tag needs (``stride_in_1x1=True`` for ``"imagenet"``), to build
    the model with (and record in its card); {} for a file or no init_weights."""
    if not init_weights:
        return {}
    from ..weights import resolve

    source, _ = resolve(model_name, init_weights, config)
    return dict(source.options) if source is not None else {}


class Task:
    """Base class of the tasks (see the module docstring). Subclasses set the class attributes and
    implement :meth:`check_data`, :meth:`read`, :meth:`fit`, :meth:`load`, :meth:`evaluate` and
    :meth:`predict`; :meth:`split` and the option handling are shared."""

    name = ""
    title = ""
    #: the data layout, one paragraph (docs/tasks.md has the long form)
    layout = ""
    #: what ``predict`` takes
    inputs = ""
    options: Dict[str, Option] = {}
    #: options ``predict`` takes (``--set`` on the predict command)
    predict_options: Dict[str, Option] = {}

    # ------------------------------------------------------------------------------------ options
    def resolve(self, given: Dict[str, Any], where: Optional[str] = None,
                table: Optional[Dict[str, Option]] = None) -> Dict[str, Any]:
        """``given`` options checked against :attr:`options` (or ``table``) and completed with the
        defaults. An unknown name or a wrong value raises one ValueError/TypeError line."""
        training = table is None
        table = self.options if table is None else table
        where = where or f"task {self.name}"
        out = {k: v.default for k, v in table.items()}
        for key, value in given.items():
            if key not in table:
                self.unknown_option(key, table, where)
            out[key] = self.check_value(key, table[key], value, where)
        if training:
            self.check_options(out, where)
        return out

    @staticmethod
    def unknown_option(key: str, table: Dict[str, Option], where: str) -> None:
        if not table:
            raise ValueError(f"{where}: this task takes no options, got {key!r}")
        raise ValueError(f"{where}: unknown option {key!r}; did you mean {nearest(key, list(table))!r}? "
                         f"(options: {', '.join(sorted(table))})")

    def check_options(self, options: Dict[str, Any], where: str) -> None:
        """Constraints between options (a subclass adds its own)."""

    @staticmethod
    def check_value(key: str, opt: Option, value: Any, where: str) -> Any:
        if value is None:
            if opt.nullable:
                return None
            raise ValueError(f"{where}: option {key} cannot be none, got {key}=None")
        kind = opt.kind
        ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
              "list": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
              "dict": lambda v: isinstance(v, dict), "choice": lambda v: v in opt.choices}[kind](value)
        if not ok:
            want = f"one of {list(opt.choices)}" if kind == "choice" else f"a {kind}"
            raise TypeError(f"{where}: option {key} must be {want}, got {key}={value!r}")
        if kind == "float":
            value = float(value)
        if kind == "list":
            value = list(value)
            if opt.choices and any(v not in opt.choices for v in value):
                raise ValueError(f"{where}: option {key} takes items among {list(opt.choices)}, got {key}={value}")
        if opt.minimum is not None and kind in ("int", "float") and value < opt.minimum:
            raise ValueError(f"{where}: option {key} must be >= {opt.minimum:g}, got {key}={value}")
        return value

    @staticmethod
    def parse_value(key: str, opt: Option, raw: str, where: str) -> Any:
        """A command-line string to the option's type (``none`` is None where allowed)."""
        if opt.nullable and raw.lower() in ("none", "null", ""):
            return None
        try:
            if opt.kind == "int":
                return int(raw)
            if opt.kind == "float":
                return float(raw)
            if opt.kind == "bool":
                if raw.lower() in ("1", "true", "yes", "on"):
                    return True
                if raw.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(raw)
            if opt.kind == "list":
                return [v for v in raw.split(",") if v]
            if opt.kind == "dict":
                value = json.loads(raw)
                if not isinstance(value, dict):
                    raise ValueError(raw)
                return value
            if opt.kind == "choice":
                for c in opt.choices:
                    if str(c) == raw:
                        return c
                raise ValueError(raw)
        except ValueError:
            want = {"int": "an integer", "float": "a number", "bool": "true or false", "list": "a,b,c",
                    "dict": "a JSON object", "choice": f"one of {[str(c) for c in opt.choices]}"}[opt.kind]
            raise ValueError(f"{where}: option {key} takes {want}, got {key}={raw!r}") from None
        return raw

    # ------------------------------------------------------------------------------------ data
    def check_data(self, folder: str) -> Dict[str, Any]:
        """Validates ``folder`` against the layout without writing anything; returns a summary (counts).
        The first problem raises one ValueError naming the file and the field."""
        return self.read(folder).counts()

    def read(self, folder: str) -> Samples:
        raise NotImplementedError

    def split(self, samples: Samples, test_fraction: float, seed: int) -> Tuple[List[int], List[int]]:
        """(train, test) sample indices: groups (patients, sources) whole on one side, stratified by label."""
        from ..split import patient_split

        return patient_split(samples.groups, samples.strata, test_fraction=test_fraction, seed=seed)

    # ------------------------------------------------------------------------------------ models
    def fit(self, samples: Samples, train: List[int], options: Dict[str, Any], run_dir: str, seed: int,
            resume: bool, progress: bool) -> Tuple[Any, Dict[str, Any]]:
        """Trains; returns (the model bundle :meth:`evaluate` and :meth:`predict` take, the card's
        task-specific part: ``architecture``, ``checkpoints``, ``preprocessing`` and what else rebuilding
        needs). Each training stage runs in its own folder under ``run_dir`` and resumes with ``resume``."""
        raise NotImplementedError

    def load(self, card: Dict[str, Any], run_dir: str) -> Any:
        """The model bundle rebuilt from a model card and the checkpoints it names (eval mode)."""
        raise NotImplementedError

    def evaluate(self, bundle: Any, samples: Samples, indices: List[int], out: str, seed: int = 0,
                 baseline: Optional[Dict[str, Any]] = None) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
        """(metrics with 95 % intervals, one prediction record per sample); pictures go to ``out``.
        ``baseline``: what the card recorded about the training data, for trivial baselines."""
        raise NotImplementedError

    def baseline_facts(self, samples: Samples, train: List[int]) -> Dict[str, Any]:
        """What a trivial baseline needs to know of the training split (e.g. its majority class)."""
        return {}

    def predict(self, bundle: Any, input_path: str, out: str, options: Dict[str, Any]) -> Dict[str, Any]:
        """One input (an image, a DICOM file or series folder, a NIfTI) -> a JSON-able result; writes
        ``<name>.json`` is the runner's job, pictures and masks are this method's."""
        raise NotImplementedError

    def checkpoint_options(self, checkpoint: str, card: Dict[str, Any]) -> Dict[str, Any]:
        """Predict options implied by the checkpoint file a user named (e.g. ovf's ``RUN/max.pt``)."""
        return {}

    def headline(self, metrics: Dict[str, Any]) -> str:
        """One line of the main numbers of :meth:`evaluate`'s metrics (printed by the command line)."""
        return ""

    # ------------------------------------------------------------------------------------ helpers
    @staticmethod
    def stage_dir(run_dir: str, name: str) -> str:
        return os.path.join(run_dir, name)
