"""``evalloop dataset build`` from Python, with a weighting of one's own.

:func:`build` runs evalloop's dataset build (labels under the ``[human]`` policy, weighting,
``max_examples`` subsampling, leakage-free splits, effective-sample-size checks, the card) and
returns the card. ``weighting`` may name evalloop's schemes, or be a function: it receives the
labelled rows as a ``pyarrow.Table`` and returns one weight per row, which replace the schemes'
weights before subsampling and splitting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import pyarrow as pa

from . import _evalloop
from ._evalloop import EvalloopError

if TYPE_CHECKING:
    from . import Store

__all__ = ["WEIGHT_COLUMNS", "build"]

#: The columns of the table a weighting function receives, one row per labelled example
#: (before subsampling and splitting): ``cohort_requests`` and ``cohort_counted`` are the
#: cohort's logged requests and those counted by ``[dataset] rate``, ``cohort_rate`` their
#: ratio, ``scheme_weight`` the product of the configured schemes' factors.
WEIGHT_COLUMNS = (
    "request_id",
    "cohort",
    "group",
    "class",
    "label",
    "human_score",
    "eval_score",
    "is_disagreement",
    "cohort_requests",
    "cohort_counted",
    "cohort_rate",
    "scheme_weight",
)

WeightFunction = Callable[[pa.Table], Any]
Weighting = Union[str, Sequence[str], WeightFunction, Mapping[str, float]]


def _as_weights(name: str, rows: int, result: Any) -> list[float]:
    if isinstance(result, pa.ChunkedArray):
        result = result.combine_chunks()
    try:
        w = np.asarray(result, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise EvalloopError(f"weighting {name}: returned {type(result).__name__}, not numbers: {e}") from e
    if w.ndim != 1:
        raise EvalloopError(f"weighting {name}: returned an array of shape {w.shape}; expected one weight per row ({rows})")
    return w.tolist()


def _function(name: str, fn: WeightFunction) -> Callable[[Any], list[float]]:
    def call(native_rows: Any) -> list[float]:
        table = pa.table(native_rows)
        return _as_weights(name, table.num_rows, fn(table))

    return call


def _lookup(weights: Mapping[str, float]) -> WeightFunction:
    def by_request(table: pa.Table) -> list[float]:
        out = []
        for r in table.column("request_id").to_pylist():
            if r not in weights:
                raise EvalloopError(f"weighting: no weight for request {r!r} (the mapping has {len(weights)})")
            out.append(float(weights[r]))
        return out

    return by_request


def build(
    store: Store,
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    out: str | os.PathLike[str],
    weighting: Weighting | None = None,
) -> dict[str, Any]:
    """Builds ``train/validation/test.jsonl`` and ``dataset_card.json/.md`` into ``out``.

    ``config``: the ``[dataset]`` section as a dict, or a TOML config file (whose ``[human]``
    policy then applies too), or None for the store's config. ``weighting``: a scheme name
    (``inverse_rate``, ``ipw``, ``class_balance``, ...) or a list of them, replacing the config's
    ``weighting``; or a function of the labelled rows (a ``pyarrow.Table`` with
    :data:`WEIGHT_COLUMNS`) returning one weight (finite, >= 0) per row; or a mapping from
    request id to weight. A configured ``normalize`` still applies after a function's weights,
    and the card names the function (``custom_weighting``). Returns the card, as
    ``evalloop dataset build --json`` prints it.
    """
    section = None
    path = None
    if isinstance(config, Mapping):
        section = dict(config)
    elif config is not None:
        path = os.fspath(config)
    schemes = None
    fn = None
    name = None
    if isinstance(weighting, str):
        schemes = [weighting]
    elif isinstance(weighting, Mapping):
        name = "request_id_lookup"
        fn = _function(name, _lookup(weighting))
    elif callable(weighting):
        name = getattr(weighting, "__qualname__", None) or getattr(weighting, "__name__", None) or type(weighting).__name__
        fn = _function(name, weighting)
    elif weighting is not None:
        schemes = [str(s) for s in weighting]
    return _evalloop.build_dataset(
        store._native,
        os.fspath(out),
        config=path,
        section=section,
        schemes=schemes,
        weighting=fn,
        weighting_name=name,
    )
