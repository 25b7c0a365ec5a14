"""The Python package `evalloop` (crates/evalloop-py) against the command line.

Every function is checked against `evalloop <command> --json` on the same store: the dicts must
be equal (the same figures, to the last bit), the tables must hold what the store holds, a
custom weighting must write the same dataset as the same weights given otherwise, errors must
carry the command line's messages, and scores must equal `evalloop score`'s.

Run by scripts/python-bindings.sh, which builds the wheel and installs it into a fresh venv;
EVALLOOP_BIN names the `evalloop` binary built from the same tree, EVALLOOP_TEST_MODEL_DIR the
real MiniLM (the scoring tests train a one-epoch evaluator from it, or are skipped without it).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import evalloop

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "data" / "example"
BIN = os.environ.get("EVALLOOP_BIN") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "evalloop"
)


def cli(db: Path | str, *args: str, config: Path | None = None, cwd: Path | None = None) -> dict:
    """`evalloop --db DB [--config C] ARGS --json`, parsed."""
    cmd = [BIN, "--db", str(db)]
    if config is not None:
        cmd += ["--config", str(config)]
    p = subprocess.run([*cmd, *args, "--json"], capture_output=True, text=True, cwd=cwd)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def cli_error(db: Path | str, *args: str) -> str:
    """The message of a failing `evalloop` command (stderr after `error: `)."""
    p = subprocess.run([BIN, "--db", str(db), *args], capture_output=True, text=True)
    assert p.returncode != 0, p.stdout
    at = 0 if p.stderr.startswith("error: ") else p.stderr.index("\nerror: ") + 1
    text = p.stderr[at + len("error: ") :]
    return text[:-1] if text.endswith("\n") else text  # the newline eprintln! adds


@pytest.fixture(scope="session")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped example, ingested into a SQLite store."""
    d = tmp_path_factory.mktemp("store")
    path = d / "example.db"
    for what in ("logs", "feedback"):
        p = subprocess.run([BIN, "--db", str(path), "ingest", what, str(EXAMPLE / f"{what}.jsonl")], capture_output=True)
        assert p.returncode == 0, p.stderr
    return path


@pytest.fixture(scope="session")
def store(db: Path) -> evalloop.Store:
    return evalloop.Store.open(db)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- tables -------------------------------------------------------------------------------


def test_logs_are_the_ingested_logs(store: evalloop.Store) -> None:
    t = store.logs()
    assert isinstance(t, pa.Table)
    given = {r["request_id"]: r for r in jsonl(EXAMPLE / "logs.jsonl")}
    assert t.num_rows == len(given) == cli(store.location, "stats")["logs"]
    rows = t.to_pylist()
    for r in rows:
        g = given[r["request_id"]]
        assert r["prompt"] == g["prompt"] and r["output"] == g["output"]
        assert r["eval_score"] == g["eval_scores"]["overall"]
        assert r["cohort"] == g["metadata"]["user_cohort"]
        assert json.loads(r["metadata"]) == g["metadata"]
        assert r["evaluator"] == "baseline-unigram-f1"
    assert t.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    # The window options filter as --cohort and --since do.
    free = store.logs(cohort="free")
    assert free.num_rows == sum(1 for g in given.values() if g["metadata"]["user_cohort"] == "free")
    assert store.logs(since="2026-05-14").num_rows < t.num_rows


def test_feedback_holds_every_event(store: evalloop.Store) -> None:
    t = store.feedback()
    given = jsonl(EXAMPLE / "feedback.jsonl")
    assert t.num_rows == len(given)
    by_type = dict(cli(store.location, "stats")["feedback_by_type"])
    counts = {}
    for ft in t.column("feedback_type").to_pylist():
        counts[ft] = counts.get(ft, 0) + 1
    assert counts == by_type
    ratings = [r for r in t.to_pylist() if r["feedback_type"] == "explicit_rating"]
    assert all(1 <= r["value"] <= 5 for r in ratings)


def test_human_scores_are_what_the_analyses_read(store: evalloop.Store) -> None:
    t = store.human_scores()
    c = store.correlate()
    assert t.num_rows == c["n_samples"]
    # Spearman recomputed from the table (average ranks, Pearson of ranks) is the CLI's.
    x = np.asarray(t.column("eval_score"))
    y = np.asarray(t.column("human_score"))

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(1, len(v) + 1)
        for u in np.unique(v):
            m = v == u
            r[m] = r[m].mean()
        return r

    rho = np.corrcoef(ranks(x), ranks(y))[0, 1]
    assert abs(rho - c["spearman_r"]) < 1e-12
    # Another policy gives other human scores: implicit usage now counts.
    counted = store.human_scores(policy={"implicit_usage": 4.0})
    assert counted.num_rows >= t.num_rows
    strict = store.human_scores(policy={"good_min": 5.0, "bad_max": 1.0})
    assert strict["is_good"].to_pylist() == [h >= 5.0 for h in strict["human_score"].to_pylist()]
    assert sum(strict["is_good"].to_pylist()) < sum(t["is_good"].to_pylist())
    with pytest.raises(evalloop.EvalloopError, match="policy"):
        store.human_scores(policy={"thumbs_upp": 5})


def test_a_table_goes_to_pandas_style_consumers_through_the_c_stream(store: evalloop.Store) -> None:
    native = store._native.human_scores()
    assert len(native) == store.human_scores().num_rows
    capsule = native.__arrow_c_stream__()
    assert type(capsule).__name__ == "PyCapsule"
    again = pa.RecordBatchReader.from_stream(native).read_all()
    assert again.equals(store.human_scores())


# --- analyses equal to --json ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "kwargs", "flags"),
    [
        ("correlate", {}, ["correlate"]),
        ("correlate", {"by": "cohort", "bootstrap": 200, "seed": 3}, ["correlate", "--by", "cohort", "--bootstrap", "200", "--seed", "3"]),
        ("correlate", {"group_key": "group_id", "cohort": "pro"}, ["correlate", "--group-key", "group_id", "--cohort", "pro"]),
        ("calibration", {}, ["calibration"]),
        ("calibration", {"bins": 5, "threshold": 0.5}, ["calibration", "--bins", "5", "--threshold", "0.5"]),
        ("disagreements", {"limit": 5}, ["disagreements", "--limit", "5"]),
        ("bias", {}, ["bias"]),
        ("bias", {"low_factor": 0.9, "since": "2026-05-13"}, ["bias", "--low-factor", "0.9", "--since", "2026-05-13"]),
        ("agreement", {"bootstrap": 200}, ["agreement", "--bootstrap", "200"]),
        ("agreement", {"bootstrap": 100, "by": "cohort", "level": "interval"}, ["agreement", "--bootstrap", "100", "--by", "cohort", "--level", "interval"]),
        ("estimate", {}, ["estimate"]),
        ("estimate", {"metric": "pass_rate", "by": "cohort", "level": 0.9}, ["estimate", "--metric", "pass_rate", "--by", "cohort", "--level", "0.9"]),
        ("estimate", {"normal_interval": True, "until": "2026-05-16"}, ["estimate", "--normal-interval", "--until", "2026-05-16"]),
        ("impact", {"before": "2026-05-14", "after": "2026-05-14", "bootstrap": 300}, ["impact", "--before", "2026-05-14", "--after", "2026-05-14", "--bootstrap", "300"]),
        ("impact", {"metadata": "system=fragments:textrank", "bootstrap": 300}, ["impact", "--metadata", "system=fragments:textrank", "--bootstrap", "300"]),
    ],
)
def test_analysis_equals_the_cli_json(store: evalloop.Store, method: str, kwargs: dict, flags: list[str]) -> None:
    got = getattr(store, method)(**kwargs)
    assert got == cli(store.location, *flags)


def test_stats_equals_the_cli_json(store: evalloop.Store) -> None:
    assert store.stats() == cli(store.location, "stats")


def test_disagreements_export_writes_the_same_file(store: evalloop.Store, tmp_path: Path) -> None:
    store.disagreements(export=tmp_path / "py.jsonl")
    cli(store.location, "disagreements", "--export", str(tmp_path / "cli.jsonl"))
    assert (tmp_path / "py.jsonl").read_bytes() == (tmp_path / "cli.jsonl").read_bytes()


def test_the_config_policy_applies_as_with_dash_dash_config(db: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[human]\nimplicit_usage = 4.0\nimplicit_discard = 1.0\n")
    s = evalloop.Store.open(db, config=cfg)
    assert s.correlate() == cli(db, "correlate", config=cfg)
    assert s.correlate() != evalloop.Store.open(db).correlate()


@pytest.mark.skipif(not os.environ.get("EVALLOOP_TEST_PG"), reason="no EVALLOOP_TEST_PG (scripts/with-postgres.sh)")
def test_a_postgres_store_gives_the_same_figures() -> None:
    url = os.environ["EVALLOOP_TEST_PG"]  # a throwaway cluster of its own
    pg = evalloop.Store.open(url)
    assert pg.backend == "postgres"
    for what in ("logs", "feedback"):
        pg.ingest(what, EXAMPLE / f"{what}.jsonl")
    assert pg.correlate(bootstrap=100) == cli(url, "correlate", "--bootstrap", "100")
    assert pg.bias() == cli(url, "bias")
    assert pg.estimate(by="cohort") == cli(url, "estimate", "--by", "cohort")
    assert pg.human_scores().num_rows == pg.correlate()["n_samples"]
    assert pg.feedback().num_rows == 397 and pg.logs().num_rows == 392


# --- errors -------------------------------------------------------------------------------


def test_errors_carry_the_cli_messages(store: evalloop.Store, tmp_path: Path) -> None:
    with pytest.raises(evalloop.EvalloopError) as e:
        store.estimate(level=1.5)
    assert str(e.value) == cli_error(store.location, "estimate", "--level", "1.5")
    with pytest.raises(evalloop.EvalloopError) as e:
        store.impact(metadata="system")
    assert str(e.value) == cli_error(store.location, "impact", "--metadata", "system")
    with pytest.raises(ValueError, match="by="):
        store.correlate(by="week")
    with pytest.raises(evalloop.EvalloopError, match="since"):
        store.bias(since="yesterday")
    with pytest.raises(evalloop.EvalloopError, match="bootstrap=200000"):
        store.agreement(bootstrap=200_000)


def test_a_bad_judgement_line_names_file_line_and_field(tmp_path: Path) -> None:
    lines = (EXAMPLE / "newsroom-sample.jsonl").read_text().splitlines()[:5]
    row = json.loads(lines[2])
    del row["output"]
    lines[2] = json.dumps(row)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(evalloop.EvalloopError) as e:
        evalloop.simulate(bad, "coherence", tmp_path / "out")
    msg = str(e.value)
    assert f"{bad}:3" in msg and "output" in msg, msg
    p = subprocess.run(
        [BIN, "simulate", "--judgements", str(bad), "--dimension", "coherence", "--out", str(tmp_path / "o2")],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and f"error: {msg}" in p.stderr


def test_a_bad_dataset_config_names_the_file_and_key(store: evalloop.Store, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[dataset]\nweightingg = [\"ipw\"]\n")
    with pytest.raises(evalloop.EvalloopError) as e:
        evalloop.dataset.build(store, cfg, out=tmp_path / "d")
    assert str(e.value) == cli_error(store.location, "--config", str(cfg), "dataset", "build", "--out", str(tmp_path / "d2"))
    assert "weightingg" in str(e.value) and str(cfg) in str(e.value)


# --- ingest -------------------------------------------------------------------------------


def test_ingest_equals_the_cli(tmp_path: Path) -> None:
    s = evalloop.Store.open(tmp_path / "py.db")
    got = [s.ingest(w, EXAMPLE / f"{w}.jsonl") for w in ("logs", "feedback")]
    want = [cli(tmp_path / "cli.db", "ingest", w, str(EXAMPLE / f"{w}.jsonl")) for w in ("logs", "feedback")]
    assert got == want
    assert s.stats()["feedback_events"] == 397


def test_a_bad_row_under_strict_names_file_line_and_field(tmp_path: Path) -> None:
    rows = (EXAMPLE / "feedback.jsonl").read_text().splitlines()[:4]
    bad_row = json.loads(rows[1])
    bad_row["value"] = 9
    rows[1] = json.dumps(bad_row)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(rows) + "\n")
    s = evalloop.Store.open(tmp_path / "py.db")
    s.ingest("logs", EXAMPLE / "logs.jsonl")
    with pytest.raises(evalloop.EvalloopError) as e:
        s.ingest("feedback", bad, strict=True)
    assert f"{bad}:2" in str(e.value) and "value" in str(e.value), str(e.value)
    assert str(e.value) == cli_error(tmp_path / "py.db", "ingest", "feedback", str(bad), "--strict")
    assert s.stats()["feedback_events"] == 0


# --- simulate -----------------------------------------------------------------------------


def test_simulate_equals_the_cli(tmp_path: Path) -> None:
    args = dict(seed=7, holdout_groups=4)
    got = evalloop.simulate(EXAMPLE / "newsroom-sample.jsonl", "coherence", tmp_path / "py", config=EXAMPLE / "simulate.toml", **args)
    p = subprocess.run(
        [BIN, "--config", str(EXAMPLE / "simulate.toml"), "--json", "simulate", "--judgements", str(EXAMPLE / "newsroom-sample.jsonl"),
         "--dimension", "coherence", "--out", str(tmp_path / "cli"), "--seed", "7", "--holdout-groups", "4"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    want = json.loads(p.stdout)
    for d in (got, want):  # the output directory differs
        d.pop("out", None)
    assert got == want
    for f in ("logs.jsonl", "feedback.jsonl", "truth.jsonl"):
        assert (tmp_path / "py" / f).read_bytes() == (tmp_path / "cli" / f).read_bytes(), f
    # The shipped example was made by this command.
    assert (tmp_path / "py" / "logs.jsonl").read_bytes() == (EXAMPLE / "logs.jsonl").read_bytes()


# --- dataset.build and custom weightings -----------------------------------------------------

SPLITS = ("train.jsonl", "validation.jsonl", "test.jsonl")


def same_rows(a: Path, b: Path) -> None:
    for f in SPLITS:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_dataset_build_equals_the_cli(store: evalloop.Store, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[dataset]\nweighting = ["ipw", "class_balance", "normalize"]\nmax_examples = 150\n')
    card = evalloop.dataset.build(store, cfg, out=tmp_path / "py")
    assert card == cli(store.location, "dataset", "build", "--out", str(tmp_path / "cli"), config=cfg)
    same_rows(tmp_path / "py", tmp_path / "cli")
    assert "custom_weighting" not in card
    # The same section as a dict.
    again = evalloop.dataset.build(store, {"weighting": ["ipw", "class_balance", "normalize"], "max_examples": 150}, out=tmp_path / "dict")
    assert again == card
    same_rows(tmp_path / "dict", tmp_path / "cli")


def test_a_scheme_name_replaces_the_configs_weighting(store: evalloop.Store, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[dataset]\nweighting = ["inverse_rate"]\n')
    card = evalloop.dataset.build(store, {"weighting": ["ipw"]}, out=tmp_path / "py", weighting="inverse_rate")
    assert card == cli(store.location, "dataset", "build", "--out", str(tmp_path / "cli"), config=cfg)
    same_rows(tmp_path / "py", tmp_path / "cli")
    with pytest.raises(evalloop.EvalloopError, match="inverse_ratee"):
        evalloop.dataset.build(store, out=tmp_path / "x", weighting=["inverse_ratee"])


def test_a_callable_reproducing_inverse_rate_writes_the_builtin_dataset(store: evalloop.Store, tmp_path: Path) -> None:
    seen: list[pa.Table] = []

    def inverse_rate(rows: pa.Table) -> np.ndarray:
        seen.append(rows)
        return 1.0 / (np.asarray(rows["cohort_rate"]) + 0.01)  # the article's formula

    cfg = {"weighting": ["none"], "max_examples": 150, "min_per_stratum": 5}
    card = evalloop.dataset.build(store, cfg, out=tmp_path / "custom", weighting=inverse_rate)
    builtin = evalloop.dataset.build(store, {**cfg, "weighting": ["inverse_rate"]}, out=tmp_path / "builtin")
    same_rows(tmp_path / "custom", tmp_path / "builtin")
    assert card["custom_weighting"].endswith("inverse_rate")
    assert card["splits"] == builtin["splits"] and card["subsampling"] == builtin["subsampling"]
    # The function saw every labelled example, with its cohort's counts.
    (rows,) = seen
    assert tuple(rows.column_names) == evalloop.dataset.WEIGHT_COLUMNS
    assert rows.num_rows == card["examples_before_subsampling"]
    for c, info in card["cohorts"].items():
        mine = rows.filter(pc.equal(rows["cohort"], c))
        assert set(mine["cohort_requests"].to_pylist()) == {info["requests"]}
    assert set(rows["scheme_weight"].to_pylist()) == {1.0}


def test_scheme_weight_passed_through_is_the_schemes_dataset(store: evalloop.Store, tmp_path: Path) -> None:
    cfg = {"weighting": ["ipw", "disagreement_boost", "normalize"]}
    evalloop.dataset.build(store, cfg, out=tmp_path / "custom", weighting=lambda rows: rows["scheme_weight"])
    evalloop.dataset.build(store, cfg, out=tmp_path / "builtin")
    same_rows(tmp_path / "custom", tmp_path / "builtin")


def test_the_same_weights_as_a_column_or_a_function_give_the_same_dataset(store: evalloop.Store, tmp_path: Path) -> None:
    def by_score(rows: pa.Table) -> np.ndarray:
        # A scheme of one's own: trust confident evaluator scores less.
        e = np.asarray(rows["eval_score"])
        return 1.0 + 4.0 * np.abs(e - 0.5) / np.sqrt(np.asarray(rows["cohort_rate"]) + 0.05)

    # The rates come from the build: take them from the rows the function is given.
    got: dict[str, float] = {}

    def record(rows: pa.Table) -> np.ndarray:
        w = by_score(rows)
        got.update(zip(rows["request_id"].to_pylist(), w.tolist()))
        return w

    cfg = {"weighting": ["normalize"], "max_examples": 120}
    a = evalloop.dataset.build(store, cfg, out=tmp_path / "function", weighting=record)
    b = evalloop.dataset.build(store, cfg, out=tmp_path / "column", weighting=got)
    same_rows(tmp_path / "function", tmp_path / "column")
    assert a["normalize_divisor"] == b["normalize_divisor"] and a["splits"] == b["splits"]
    assert len(got) == a["examples_before_subsampling"]


def test_bad_weights_are_refused(store: evalloop.Store, tmp_path: Path) -> None:
    with pytest.raises(evalloop.EvalloopError, match=r"3 weights for \d+ examples"):
        evalloop.dataset.build(store, out=tmp_path / "a", weighting=lambda rows: [1.0, 2.0, 3.0])
    with pytest.raises(evalloop.EvalloopError, match=r"weight -1 of row 0 \(request .*\) is not a finite number >= 0"):
        evalloop.dataset.build(store, out=tmp_path / "b", weighting=lambda rows: -np.ones(rows.num_rows))
    with pytest.raises(evalloop.EvalloopError, match="weight NaN"):
        evalloop.dataset.build(store, out=tmp_path / "c", weighting=lambda rows: np.full(rows.num_rows, np.nan))
    with pytest.raises(evalloop.EvalloopError, match="shape"):
        evalloop.dataset.build(store, out=tmp_path / "d", weighting=lambda rows: np.ones((rows.num_rows, 2)))
    with pytest.raises(evalloop.EvalloopError, match="no weight for request"):
        evalloop.dataset.build(store, out=tmp_path / "e", weighting={"r1": 1.0})

    class Boom(RuntimeError):
        pass

    def fails(rows: pa.Table) -> None:
        raise Boom("from the notebook")

    with pytest.raises(Boom, match="from the notebook"):
        evalloop.dataset.build(store, out=tmp_path / "f", weighting=fails)
    for d in "abcdef":
        assert not (tmp_path / d / "train.jsonl").exists()


# --- scoring ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model(db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch evaluator trained from the real MiniLM on 48 examples (about 6 s)."""
    base = os.environ.get("EVALLOOP_TEST_MODEL_DIR") or str(ROOT / "models" / "all-MiniLM-L6-v2")
    if not (Path(base) / "model.safetensors").exists():
        pytest.skip(f"no base model at {base} (scripts/fetch-model.sh puts MiniLM there)")
    d = tmp_path_factory.mktemp("model")
    cfg = d / "m.toml"
    cfg.write_text(
        '[dataset]\nlabel = "graded"\nmax_examples = 48\nmin_per_stratum = 1\n\n'
        f'[train]\nbase_model = "{base}"\nepochs = 1\nbatch_size = 16\nmax_length = 32\n'
    )
    for args in (["dataset", "build", "--out", str(d / "ds")], ["train", "--dataset", str(d / "ds"), "--out", str(d / "model")]):
        p = subprocess.run([BIN, "--db", str(db), "--config", str(cfg), *args], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    return d / "model"


def test_scores_equal_evalloop_score(model: Path, tmp_path: Path) -> None:
    logs = jsonl(EXAMPLE / "logs.jsonl")[:40]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in logs))
    p = subprocess.run([BIN, "score", "--model", str(model), "--input", str(inp), "--output", str(tmp_path / "out.jsonl")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    want = np.asarray([r["score"] for r in jsonl(tmp_path / "out.jsonl")], dtype=np.float32)
    scorer = evalloop.Scorer.load(model)
    got = scorer.score([r["prompt"] for r in logs], [r["output"] for r in logs])
    assert got.dtype == np.float32 and got.shape == (40,)
    assert np.array_equal(got, want)
    # Arrow columns are taken as they are.
    t = pa.table({"p": [r["prompt"] for r in logs], "o": [r["output"] for r in logs]})
    assert np.array_equal(scorer.score(t["p"], t["o"]), want)
    with pytest.raises(evalloop.EvalloopError, match="2 prompts but 1 outputs"):
        scorer.score(["a", "b"], ["c"])
    # int8 scoring: the CLI's `--precision int8` scores, and not fp32's.
    p = subprocess.run([BIN, "score", "--model", str(model), "--input", str(inp), "--output", str(tmp_path / "int8.jsonl"),
                        "--precision", "int8"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    want8 = np.asarray([r["score"] for r in jsonl(tmp_path / "int8.jsonl")], dtype=np.float32)
    got8 = evalloop.Scorer.load(model, precision="int8").score([r["prompt"] for r in logs], [r["output"] for r in logs])
    assert np.array_equal(got8, want8) and not np.array_equal(got8, want)
    with pytest.raises(evalloop.EvalloopError, match="unknown precision \"int4\""):
        evalloop.Scorer.load(model, precision="int4")


def test_a_missing_model_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(evalloop.EvalloopError, match=str(tmp_path / "none")):
        evalloop.Scorer.load(tmp_path / "none")


def test_scoring_releases_the_interpreter(model: Path) -> None:
    scorer = evalloop.Scorer.load(model)
    logs = jsonl(EXAMPLE / "logs.jsonl")
    prompts, outputs = [r["prompt"] for r in logs], [r["output"] for r in logs]
    done = threading.Event()
    ticks = 0

    def run() -> None:
        scorer.score(prompts, outputs)
        done.set()

    t = threading.Thread(target=run)
    start = time.perf_counter()
    t.start()
    time.sleep(0.05)
    while not done.is_set():
        ticks += 1  # runs only while the scorer does not hold the interpreter
        time.sleep(0.001)
    t.join()
    elapsed = time.perf_counter() - start
    assert elapsed > 0.2, "scoring was too quick to tell"
    assert ticks > 20, f"the main thread ran {ticks} times in {elapsed:.2f} s of scoring"


def test_the_package_is_typed() -> None:
    pkg = Path(evalloop.__file__).parent
    assert (pkg / "py.typed").exists() and (pkg / "_evalloop.pyi").exists()
    assert evalloop.__version__ == cli_version()


def cli_version() -> str:
    out = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout
    return out.split()[-1]

