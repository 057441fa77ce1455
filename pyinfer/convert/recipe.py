"""Compression recipes: which encoding, pruning and calibration each layer gets.

A recipe is one of

- an encoding name (``"int8"``): that encoding for every layer that can take it;
- a dict ``{"default": "int8", "layers": {"fc1": {"encoding": "csr", "sparsity": 0.9},
  "conv*": "int4", "head": "dense"}}``; layer keys are node names or ``fnmatch``
  patterns (the first key that matches a layer wins, exact names before patterns);
  ``default`` may itself be a dict of options (``{"encoding": "int8", "calibration":
  "minmax"}``), and defaults to ``"dense"`` (layers not named stay as they are);
- a path to such a dict as JSON (``.json``) or YAML (``.yaml``/``.yml``, needs PyYAML).

Options of a layer, besides ``encoding``: those ``kernels.encode`` takes for the encoding
(``group_size``, ``activations``, ...), and

- ``sparsity``: fraction of weights set to zero before encoding (0 <= s < 1);
- ``pruning``: ``"magnitude"`` (per layer, the default), ``"global"`` (one magnitude
  threshold over every layer pruned globally, which share one ``sparsity``), ``"N:M"``
  such as ``"2:4"`` (keep the N largest of every M consecutive weights along the
  input axis; implies sparsity 1 - N/M) or ``"block"`` (zero blocks of ``block_size``
  consecutive output channels at one input position, by L2 norm);
- ``block_size``: output channels per block for ``pruning="block"`` (default 8, the row
  tile of the int8 and int4 kernels);
- ``calibration``: ``"minmax"`` or ``"percentile"``, for ``int8`` and ``int4``: a static
  activation scale calibrated from ``data`` instead of dynamic per-row scales;
  ``percentile``: the percentile of ``|x|`` used (default 99.99);
- ``structured``: fraction of the layer's output neurons (Linear) or channels (Conv2d)
  removed before anything else, the consuming layers' inputs shrinking to match (see
  :mod:`pyinfer.convert.structured`; 0 <= s < 1); ``criterion``: what ranks them, the
  ``"l2"`` (default) or ``"l1"`` norm of each one's weights.

Everything is checked before any work: unknown encodings or options, layer names or
patterns matching no layer (the error lists the layers), encodings that cannot apply to
the layer they name.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from kernels import registry

#: Recipe options that are not ``kernels.encode`` options.
RECIPE_OPTIONS = (
    "sparsity",
    "pruning",
    "block_size",
    "calibration",
    "percentile",
    "structured",
    "criterion",
)
PRUNING_MODES = ("magnitude", "global", "block")  # plus "N:M"
CALIBRATIONS = ("minmax", "percentile")
#: Norms of a neuron's (channel's) weights that rank them for structured pruning.
CRITERIA = ("l2", "l1")
#: Encodings whose static activation scale ``calibration`` sets.
CALIBRATED_ENCODINGS = ("int8", "int4")
_NM = re.compile(r"^(\d+):(\d+)$")


class RecipeError(ValueError):
    """A recipe that cannot be applied: raised before any layer is touched."""


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """What one weighted layer gets.

    Attributes
    ----------
    layer : str
        The node name.
    encoding : str
    options : dict
        ``kernels.encode`` options for the encoding.
    sparsity : float
        Fraction of weights to prune before encoding (0: none).
    pruning : str
        ``"magnitude"``, ``"global"``, ``"block"`` or ``"N:M"``.
    block_size : int
    calibration : str or None
        ``"minmax"``, ``"percentile"`` or None (dynamic activations).
    percentile : float
    from_default : bool
        True when the layer took the recipe's default (then an encoding that cannot
        apply skips the layer instead of failing).
    source : str
        Which recipe entry chose it: ``"default"`` or the layer key.
    structured : float
        Fraction of output neurons (channels) to remove (0: none).
    criterion : str
        ``"l2"`` or ``"l1"``: the norm ranking neurons for structured pruning.
    """

    layer: str
    encoding: str
    options: dict
    sparsity: float = 0.0
    pruning: str = "magnitude"
    block_size: int = 8
    calibration: str | None = None
    percentile: float = 99.99
    from_default: bool = False
    source: str = "default"
    structured: float = 0.0
    criterion: str = "l2"

    def nm(self) -> tuple[int, int] | None:
        """(N, M) for N:M pruning, else None."""
        m = _NM.match(self.pruning)
        return (int(m.group(1)), int(m.group(2))) if m else None


def read_recipe(recipe: Any) -> dict[str, Any]:
    """A recipe (name, dict, or JSON/YAML path) as ``{"default": ..., "layers": {...}}``.

    Raises
    ------
    RecipeError
        A malformed recipe, naming what is wrong.
    FileNotFoundError
        A path that does not exist.
    """
    if isinstance(recipe, (str, os.PathLike)):
        text = os.fspath(recipe)
        ext = os.path.splitext(text)[1].lower()
        if ext in (".json", ".yaml", ".yml"):
            recipe = _read_file(text, ext)
        elif _is_encoding_name(text) or text == "dense":
            return {"default": text, "layers": {}}
        elif os.path.exists(text):
            raise RecipeError(f"recipe file {text!r} must end in .json, .yaml or .yml")
        else:
            known = ", ".join(registry.names())
            raise RecipeError(
                f"recipe {text!r} is neither an encoding ({known}) nor a .json/.yaml file"
            )
    if not isinstance(recipe, Mapping):
        raise RecipeError(
            f"a recipe is an encoding name, a dict or a JSON/YAML file, got {type(recipe).__name__}"
        )
    extra = set(recipe) - {"default", "layers"}
    if extra:
        raise RecipeError(f"unknown recipe key(s) {sorted(extra)}; expected default, layers")
    layers = recipe.get("layers") or {}
    if not isinstance(layers, Mapping) or not all(isinstance(k, str) for k in layers):
        raise RecipeError("recipe 'layers' must map layer names or patterns to settings")
    return {"default": recipe.get("default", "dense"), "layers": dict(layers)}


def _is_encoding_name(text: str) -> bool:
    try:
        registry.get(text)
    except ValueError:
        return False
    return True


def _read_file(path: str, ext: str) -> Any:
    with open(path, encoding="utf-8") as f:  # FileNotFoundError names the path
        text = f.read()
    if ext == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"recipe {path}: invalid JSON: {exc}") from None
    try:
        import yaml
    except ImportError:
        raise RecipeError(
            f"recipe {path}: reading YAML needs PyYAML (pip install pyyaml, or "
            "pyinfer[convert]); or write the recipe as JSON"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path}: invalid YAML: {exc}") from None


def _settings(value: Any, where: str, default: dict | None) -> dict[str, Any]:
    """A layer's settings as a dict with an ``encoding``: a name, or a dict of options
    (without ``encoding``, the default's encoding and options, updated)."""
    if isinstance(value, str):
        return {"encoding": value}
    if not isinstance(value, Mapping):
        raise RecipeError(f"{where}: expected an encoding name or a dict of options, got {value!r}")
    settings = dict(value)
    if "encoding" not in settings:
        if default is None:
            raise RecipeError(f"{where}: no encoding given")
        settings = {**default, **settings}
    if not isinstance(settings["encoding"], str):
        raise RecipeError(f"{where}: encoding must be a name, got {settings['encoding']!r}")
    return settings


def plan_layers(recipe: Any, layers: Mapping[str, Any]) -> list[LayerPlan]:
    """Resolve a recipe against a model's weighted layers, checking everything.

    Parameters
    ----------
    recipe : str, dict or path
        See the module docstring.
    layers : mapping of str -> EncodedWeight
        The weighted layers (node name -> weight), in model order.

    Returns
    -------
    list of LayerPlan
        One per weighted layer, in order.

    Raises
    ------
    RecipeError
        Unknown encodings or options, bad values, names matching no layer.
    """
    spec = read_recipe(recipe)
    where = "recipe default"
    default = _settings(spec["default"], where, None)
    _check_settings(default, where)
    names = list(layers)
    chosen: dict[str, tuple[str, dict]] = {}
    keys = sorted(spec["layers"], key=lambda k: _is_pattern(k))  # exact names first
    for key in keys:
        where = f"recipe layer {key!r}"
        settings = _settings(spec["layers"][key], where, default)
        _check_settings(settings, where)
        matched = fnmatch.filter(names, key) if _is_pattern(key) else [key] * (key in layers)
        if not matched:
            what = "pattern matches" if _is_pattern(key) else "names"
            raise RecipeError(
                f"{where}: {what} no weighted layer; the layers are: {', '.join(names)}"
            )
        for name in matched:
            chosen.setdefault(name, (key, settings))
    plans = []
    for name in names:
        key, settings = chosen.get(name, ("default", default))
        plans.append(_plan(name, settings, key))
    _check_global(plans)
    return plans


def _is_pattern(key: str) -> bool:
    return any(c in key for c in "*?[")


def _check_settings(settings: dict[str, Any], where: str) -> None:
    try:
        row = registry.get(settings["encoding"])
    except ValueError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    options = {k: v for k, v in settings.items() if k not in ("encoding", *RECIPE_OPTIONS)}
    try:
        registry.check_options(row, options)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{where}: {exc} (recipe options: {', '.join(RECIPE_OPTIONS)})") from None
    sparsity = settings.get("sparsity", 0.0)
    if (
        isinstance(sparsity, bool)
        or not isinstance(sparsity, (int, float))
        or not (0 <= sparsity < 1)
    ):
        raise RecipeError(f"{where}: sparsity must be a number in [0, 1), got {sparsity!r}")
    pruning = settings.get("pruning", "magnitude")
    nm = _NM.match(pruning) if isinstance(pruning, str) else None
    if pruning not in PRUNING_MODES and nm is None:
        raise RecipeError(
            f"{where}: pruning must be one of {list(PRUNING_MODES)} or 'N:M' such as '2:4', "
            f"got {pruning!r}"
        )
    if nm is not None:
        n, m = int(nm.group(1)), int(nm.group(2))
        if not 0 < n < m:
            raise RecipeError(f"{where}: pruning {pruning!r} needs 0 < N < M")
        if "sparsity" in settings and abs(sparsity - (1 - n / m)) > 1e-9:
            raise RecipeError(
                f"{where}: pruning {pruning!r} means sparsity {1 - n / m:g}, "
                f"but sparsity {sparsity!r} is given"
            )
    block = settings.get("block_size", 8)
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise RecipeError(f"{where}: block_size must be a positive integer, got {block!r}")
    calibration = settings.get("calibration")
    if calibration is not None:
        if calibration not in CALIBRATIONS:
            raise RecipeError(
                f"{where}: calibration must be one of {list(CALIBRATIONS)}, got {calibration!r}"
            )
        if settings["encoding"] not in CALIBRATED_ENCODINGS:
            raise RecipeError(
                f"{where}: calibration applies to {' and '.join(CALIBRATED_ENCODINGS)} "
                f"(static activation scales), not to {settings['encoding']}"
            )
        if options.get("activation_scale") is not None:
            raise RecipeError(f"{where}: give calibration or activation_scale, not both")
    structured = settings.get("structured", 0.0)
    if (
        isinstance(structured, bool)
        or not isinstance(structured, (int, float))
        or not (0 <= structured < 1)
    ):
        raise RecipeError(
            f"{where}: structured (the fraction of neurons or channels removed) must be a "
            f"number in [0, 1), got {structured!r}"
        )
    criterion = settings.get("criterion", "l2")
    if criterion not in CRITERIA:
        raise RecipeError(f"{where}: criterion must be one of {list(CRITERIA)}, got {criterion!r}")
    percentile = settings.get("percentile", 99.99)
    if (
        isinstance(percentile, bool)
        or not isinstance(percentile, (int, float))
        or not (50 <= percentile <= 100)
    ):
        raise RecipeError(f"{where}: percentile must be in [50, 100], got {percentile!r}")


def _plan(name: str, settings: dict[str, Any], key: str) -> LayerPlan:
    pruning = settings.get("pruning", "magnitude")
    nm = _NM.match(pruning)
    sparsity = float(settings.get("sparsity", 0.0))
    if nm is not None:
        sparsity = 1 - int(nm.group(1)) / int(nm.group(2))
    return LayerPlan(
        layer=name,
        encoding=settings["encoding"],
        options={k: v for k, v in settings.items() if k not in ("encoding", *RECIPE_OPTIONS)},
        sparsity=sparsity,
        pruning=pruning,
        block_size=int(settings.get("block_size", 8)),
        calibration=settings.get("calibration"),
        percentile=float(settings.get("percentile", 99.99)),
        from_default=key == "default",
        source=key,
        structured=float(settings.get("structured", 0.0)),
        criterion=settings.get("criterion", "l2"),
    )


def _check_global(plans: list[LayerPlan]) -> None:
    levels = {p.sparsity for p in plans if p.pruning == "global"}
    if len(levels) > 1:
        raise RecipeError(
            "layers pruned with pruning='global' share one magnitude threshold and so one "
            f"sparsity, got {sorted(levels)}"
        )
