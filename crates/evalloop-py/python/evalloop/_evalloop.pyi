"""Types of the native module (crates/evalloop-py/src); use it through the ``evalloop`` package."""

from typing import Any, Callable

__version__: str

class EvalloopError(ValueError):
    """An error of evalloop, with the command line's message (file:line:field, or the option)."""

class ArrowStream:
    """One table, exported as an Arrow C stream (``pyarrow.table(stream)`` reads it)."""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...
    def __len__(self) -> int: ...

class Store:
    @staticmethod
    def open(path_or_url: str, config: str | None = None) -> Store: ...
    @property
    def location(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def config(self) -> str | None: ...
    def ingest(
        self,
        what: str,
        file: str,
        *,
        strict: bool = False,
        rejects: str | None = None,
        batch_size: int = 10000,
        format: str | None = None,
        group_key: str | None = None,
    ) -> dict[str, Any]: ...
    def evaluators(self) -> list[str]: ...
    def stats(self) -> dict[str, Any]: ...
    def logs(
        self, *, since: str | None = None, until: str | None = None, evaluator: str | None = None, cohort: str | None = None
    ) -> ArrowStream: ...
    def feedback(
        self, *, since: str | None = None, until: str | None = None, evaluator: str | None = None, cohort: str | None = None
    ) -> ArrowStream: ...
    def human_scores(
        self,
        *,
        policy: dict[str, Any] | None = None,
        since: str | None = None,
        until: str | None = None,
        evaluator: str | None = None,
        cohort: str | None = None,
        group_key: str | None = None,
    ) -> ArrowStream: ...
    def correlate(
        self,
        *,
        by: str | None = None,
        bootstrap: int = 0,
        seed: int = 7,
        group_key: str | None = None,
        since: str | None = None,
        until: str | None = None,
        evaluator: str | None = None,
        cohort: str | None = None,
    ) -> dict[str, Any]: ...
    def calibration(
        self,
        *,
        bins: int = 10,
        threshold: float = 0.7,
        since: str | None = None,
        until: str | None = None,
        evaluator: str | None = None,
        cohort: str | None = None,
    ) -> dict[str, Any]: ...
    def disagreements(
        self,
        *,
        threshold: float = 0.7,
        limit: int = 20,
        export: str | None = None,
        since: str | None = None,
        until: str | None = None,
        evaluator: str | None = None,
        cohort: str | None = None,
    ) -> dict[str, Any]: ...
    def bias(
        self,
        *,
        low_factor: float = 0.5,
        since: str | None = None,
        until: str | None = None,
        evaluator: str | None = None,
        cohort: str | None = None,
    ) -> dict[str, Any]: ...
    def agreement(
        self,
        *,
        level: str = "auto",
        bootstrap: int = 1000,
        seed: int = 7,
        dimension: str | None = None,
        by: str | None = None,
        since: str | None = None,
        until: str | None = None,
        evaluator: str | None = None,
        cohort: str | None = None,
    ) -> dict[str, Any]: ...
    def estimate(
        self,
        *,
        metric: str = "mean_human_score",
        by: str | None = None,
        level: float = 0.95,
        normal_interval: bool = False,
        since: str | None = None,
        until: str | None = None,
        evaluator: str | None = None,
        cohort: str | None = None,
    ) -> dict[str, Any]: ...
    def impact(
        self,
        *,
        before: str | None = None,
        after: str | None = None,
        baseline_evaluator: str | None = None,
        candidate: str | None = None,
        metadata: str | None = None,
        alpha: float = 0.05,
        bootstrap: int = 2000,
        seed: int = 7,
        since: str | None = None,
        until: str | None = None,
        evaluator: str | None = None,
        cohort: str | None = None,
    ) -> dict[str, Any]: ...

class Scorer:
    @staticmethod
    def load(model_dir: str, *, device: str = "cpu", batch_size: int = 32, precision: str = "fp32") -> Scorer: ...
    @property
    def model_dir(self) -> str: ...
    @property
    def dimensions(self) -> list[str]: ...
    def score(
        self, prompts: list[str], outputs: list[str], evaluator_scores: list[float] | None = None
    ) -> list[float]: ...

def simulate(
    judgements: str,
    dimension: str,
    out: str,
    *,
    config: str | None = None,
    seed: int | None = None,
    holdout_groups: int | None = None,
    dimensions: list[str] | None = None,
) -> dict[str, Any]: ...
def build_dataset(
    store: Store,
    out: str,
    *,
    config: str | None = None,
    section: dict[str, Any] | None = None,
    schemes: list[str] | None = None,
    weighting: Callable[[ArrowStream], list[float]] | None = None,
    weighting_name: str | None = None,
) -> dict[str, Any]: ...
