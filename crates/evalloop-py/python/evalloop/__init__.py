"""evalloop from Python: the stores, analyses, datasets and evaluator of the ``evalloop`` command.

Every function calls evalloop's Rust library (the same functions as the command line), so the
figures are those of ``evalloop <command> --json``. Tables come back as ``pyarrow.Table``
(built in Rust and handed over through the Arrow C stream interface, without copying), analyses
as plain dicts, scores as ``numpy`` arrays. Errors raise :class:`EvalloopError` (a
``ValueError``) with the command line's message, which names the file, line and field.

>>> import evalloop
>>> store = evalloop.Store.open("evalloop.db")
>>> store.correlate(by="cohort")["overall"]["spearman"]          # doctest: +SKIP
>>> card = evalloop.dataset.build(store, out="ds", weighting="ipw")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from . import _evalloop
from ._evalloop import EvalloopError, __version__

__all__ = ["EvalloopError", "Scorer", "Store", "dataset", "simulate", "__version__"]

PathLike = str | os.PathLike[str]


def _path(p: PathLike | None) -> str | None:
    return None if p is None else os.fspath(p)


class Store:
    """A log store: a SQLite file or a PostgreSQL database (``postgres://`` URL).

    Open one with :meth:`Store.open`. The window options every analysis takes (``since``,
    ``until`` as RFC 3339 or ``YYYY-MM-DD``, ``evaluator``, ``cohort``) are those of the command
    line's ``--since``, ``--until``, ``--evaluator`` and ``--cohort``. A store belongs to the
    thread that opened it: open one per thread.
    """

    def __init__(self, native: _evalloop.Store) -> None:
        self._native = native

    @classmethod
    def open(cls, path_or_url: PathLike, config: PathLike | None = None) -> Store:
        """Opens the store as ``--db`` does (a SQLite file is created if missing).

        ``config`` is a TOML config file, as ``--config`` is: its ``[human]`` policy applies to
        every analysis, its ``[dataset]`` to :func:`evalloop.dataset.build`.
        """
        return cls(_evalloop.Store.open(os.fspath(path_or_url), _path(config)))

    @property
    def location(self) -> str:
        """The store's file, or its URL without the password."""
        return self._native.location

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgres``."""
        return self._native.backend

    def __repr__(self) -> str:
        return repr(self._native)

    def ingest(
        self,
        what: str,
        file: PathLike,
        *,
        strict: bool = False,
        rejects: PathLike | None = None,
        batch_size: int = 10_000,
        format: str | None = None,
        group_key: str | None = None,
    ) -> dict[str, Any]:
        """``evalloop ingest logs|feedback|scores FILE --json``: validated, transactional ingest.

        ``what`` is ``logs``, ``feedback`` or ``scores``; ``file`` JSON Lines or CSV (``format``
        by extension unless given). Rejected rows go to ``rejects`` (default
        ``FILE.rejects.jsonl``) and are counted; with ``strict`` the first one raises
        :class:`EvalloopError` naming its file, line and field, and nothing is stored.
        """
        return self._native.ingest(
            what,
            os.fspath(file),
            strict=strict,
            rejects=_path(rejects),
            batch_size=batch_size,
            format=format,
            group_key=group_key,
        )

    def evaluators(self) -> list[str]:
        """The evaluators with scores in the store."""
        return self._native.evaluators()

    def stats(self) -> dict[str, Any]:
        """Counts of logs, feedback by type, cohorts, evaluators and the time range."""
        return self._native.stats()

    def logs(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        evaluator: str | None = None,
        cohort: str | None = None,
    ) -> pa.Table:
        """The logged requests that the evaluator scored, with prompt, output and metadata.

        Columns: ``request_id``, ``timestamp`` (UTC), ``evaluator``, ``eval_score``, ``cohort``,
        ``use_case``, ``prompt_version``, ``prompt``, ``output``, ``metadata`` (JSON text).
        """
        return pa.table(self._native.logs(since=since, until=until, evaluator=evaluator, cohort=cohort))

    def feedback(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        evaluator: str | None = None,
        cohort: str | None = None,
    ) -> pa.Table:
        """Every feedback event on the window's requests (those the evaluator scored).

        Reads each request's events with one query; for millions of requests, narrow the window.

        Columns: ``event_id``, ``request_id``, ``feedback_type`` (``explicit_thumbs_up``, ...),
        ``value`` (thumbs and implicit signals 1/0, ratings 1-5), ``text`` (comments, and a
        preference's choice), ``user_id``, ``timestamp`` (UTC), ``dimension``,
        ``other_request_id``, ``edited_output``.
        """
        return pa.table(self._native.feedback(since=since, until=until, evaluator=evaluator, cohort=cohort))

    def human_scores(
        self,
        *,
        policy: dict[str, Any] | None = None,
        since: str | None = None,
        until: str | None = None,
        evaluator: str | None = None,
        cohort: str | None = None,
        group_key: str | None = None,
    ) -> pa.Table:
        """Every request with an evaluator score and a human score, as the analyses read them.

        ``policy`` holds ``[human]`` keys (``thumbs_up``, ``thumbs_down``, ``implicit_usage``,
        ``implicit_edit``, ``implicit_discard``, ``good_min``, ``bad_max``); default the config's.
        Columns: ``request_id``, ``timestamp``, ``evaluator``, ``eval_score``, ``human_score``
        (1-5), ``n_scored_events``, ``cohort``, ``use_case``, ``group`` (the value of metadata
        ``group_key``), ``is_good`` (human score at or above the policy's ``good_min``).
        """
        return pa.table(
            self._native.human_scores(
                policy=policy, since=since, until=until, evaluator=evaluator, cohort=cohort, group_key=group_key
            )
        )

    def correlate(self, **options: Any) -> dict[str, Any]:
        """``evalloop correlate --json``: Pearson, Spearman, Kendall tau-b, p-values, CIs.

        Options: ``by`` (``cohort``, ``evaluator``, ``use-case``), ``bootstrap`` (default 0),
        ``seed`` (7), ``group_key``, and the window options.
        """
        return self._native.correlate(**options)

    def calibration(self, **options: Any) -> dict[str, Any]:
        """``evalloop calibration --json``: ECE, Brier, ROC AUC, threshold metrics, reliability.

        Options: ``bins`` (default 10), ``threshold`` (0.7), and the window options.
        """
        return self._native.calibration(**options)

    def disagreements(self, **options: Any) -> dict[str, Any]:
        """``evalloop disagreements --json``: where the evaluator and people disagree.

        Options: ``threshold`` (default 0.7), ``limit`` (20), ``export`` (a JSON Lines file for
        every disagreement), and the window options.
        """
        if options.get("export") is not None:
            options["export"] = os.fspath(options["export"])
        return self._native.disagreements(**options)

    def bias(self, **options: Any) -> dict[str, Any]:
        """``evalloop bias --json``: who leaves feedback, per cohort.

        Options: ``low_factor`` (default 0.5), and the window options.
        """
        return self._native.bias(**options)

    def agreement(self, **options: Any) -> dict[str, Any]:
        """``evalloop agreement --json``: do people agree with each other.

        Options: ``level`` (``auto``, ``nominal``, ``ordinal``, ``interval``), ``bootstrap``
        (default 1000), ``seed`` (7), ``dimension``, ``by`` (``cohort``, ``use-case``), and the
        window options.
        """
        return self._native.agreement(**options)

    def estimate(self, **options: Any) -> dict[str, Any]:
        """``evalloop estimate --json``: classical and prediction-powered (PPI++) estimates.

        Options: ``metric`` (``mean_human_score``, ``pass_rate``), ``by`` (``cohort``,
        ``prompt_version``, ``use_case``, ``week``), ``level`` (0.95), ``normal_interval``
        (False), and the window options.
        """
        return self._native.estimate(**options)

    def impact(self, **options: Any) -> dict[str, Any]:
        """``evalloop impact --json``: before/after comparison of a change.

        Give ``before`` and ``after`` (dates), ``baseline_evaluator`` and ``candidate``, or
        ``metadata`` (``KEY=BEFORE:AFTER``); also ``alpha`` (0.05), ``bootstrap`` (2000),
        ``seed`` (7), and the window options.
        """
        return self._native.impact(**options)


def simulate(
    judgements: PathLike,
    dimension: str,
    out: PathLike,
    *,
    config: PathLike | None = None,
    seed: int | None = None,
    holdout_groups: int | None = None,
    dimensions: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``evalloop simulate --json``: logs, biased feedback and ground truth from judgements.

    Writes ``logs.jsonl``, ``feedback.jsonl``, ``truth.jsonl`` (and more) into ``out``;
    ``config`` is a TOML file whose ``[simulate]`` section applies, the keywords over it.
    """
    return _evalloop.simulate(
        os.fspath(judgements),
        dimension,
        os.fspath(out),
        config=_path(config),
        seed=seed,
        holdout_groups=holdout_groups,
        dimensions=None if dimensions is None else list(dimensions),
    )


def _strings(xs: Iterable[str]) -> list[str]:
    to_pylist = getattr(xs, "to_pylist", None)
    return list(to_pylist() if to_pylist is not None else xs)


class Scorer:
    """A trained evaluator (the directory ``evalloop train`` writes, or an ensemble)."""

    def __init__(self, native: _evalloop.Scorer) -> None:
        self._native = native

    @classmethod
    def load(
        cls, model_dir: PathLike, *, device: str = "cpu", batch_size: int = 32, precision: str = "fp32"
    ) -> Scorer:
        """Loads the model on ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``); ``precision``
        ``"int8"`` runs its linear layers on 8-bit integers on the CPU (``evalloop score
        --precision int8``)."""
        return cls(
            _evalloop.Scorer.load(os.fspath(model_dir), device=device, batch_size=batch_size, precision=precision)
        )

    @property
    def model_dir(self) -> str:
        return os.fspath(self._native.model_dir)

    @property
    def dimensions(self) -> list[str]:
        """The names of the model's extra outputs (human dimensions)."""
        return self._native.dimensions

    def __repr__(self) -> str:
        return repr(self._native)

    def score(
        self,
        prompts: Iterable[str],
        outputs: Iterable[str],
        evaluator_scores: Iterable[float] | None = None,
    ) -> np.ndarray:
        """The score in [0, 1] of each (prompt, output) pair, as ``evalloop score`` gives it.

        Returns a float32 array, one score per pair. A model trained with a blend also needs
        each request's production score (``evaluator_scores``). Other Python threads run while
        the model does.
        """
        e = None if evaluator_scores is None else [float(x) for x in np.asarray(evaluator_scores, dtype=np.float64)]
        scores = self._native.score(_strings(prompts), _strings(outputs), e)
        return np.asarray(scores, dtype=np.float32)


from . import dataset  # noqa: E402  (dataset needs Store above)
