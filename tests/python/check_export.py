"""`evalloop export` files as their users read them: Hugging Face `datasets` and TRL.

For each kind (sft, kto, dpo, reward) and format (jsonl, parquet), exported from the shipped
example with the edit fixture, this checks that
  - `datasets.load_dataset("json" | "parquet")` loads the files, with the columns and feature
    types TRL's trainers expect (string prompt/completion/chosen/rejected, bool label, a list
    of {content, role} messages, float64 weight), the same rows in both formats;
  - TRL's own data utilities read them as intended: `is_conversational` is false for the
    prompt-completion and pair rows and true for `messages`, `maybe_apply_chat_template` turns
    a conversational row into text;
  - a few optimisation steps of TRL's SFT, KTO, DPO and reward trainers run over each, on a
    tiny random Llama built here with a word-level tokenizer built from the rows (CPU only).

Usage: python tests/python/check_export.py EVALLOOP_BINARY   (run from the repository root;
scripts/test.sh runs it with the venv of scripts/python-env.sh). Prints one line per check
and a closing `N passed, N failed`; exits 1 when a check fails.
"""

import json
import os
import subprocess
import sys
import tempfile
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import datasets  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)
import trl  # noqa: E402
from trl.data_utils import is_conversational, maybe_apply_chat_template  # noqa: E402

KINDS = {
    "sft": ["sft", "sft_messages"],
    "kto": ["kto"],
    "dpo": ["dpo"],
    "reward": ["reward"],
}
COMMON = {
    "cohort": "string",
    "group": "string",
    "label_source": "string",
    "request_id": "string",
    "source": "string",
    "weight": "float64",
}
COLUMNS = {
    "sft": {"prompt": "string", "completion": "string"},
    "sft_messages": {"messages": "messages"},
    "kto": {"prompt": "string", "completion": "string", "label": "bool"},
    "dpo": {"prompt": "string", "chosen": "string", "rejected": "string", "rejected_request_id": "string"},
    "reward": {"prompt": "string", "chosen": "string", "rejected": "string", "rejected_request_id": "string"},
}
# The example's prompts are news articles: the shortest rows of each file still need ~1k tokens.
MAX_LENGTH = 2048
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)

results = []


def check(name, fn):
    try:
        fn()
        results.append((name, True))
        print(f"ok     {name}", flush=True)
    except Exception:  # noqa: BLE001 - every failure is reported, the run goes on
        results.append((name, False))
        print(f"FAILED {name}\n{traceback.format_exc()}", flush=True)


def run(binary, db, *args):
    cmd = [binary, "--db", db, "--config", "configs/dataset.toml", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def feature_type(f):
    if isinstance(f, datasets.Value):
        return f.dtype
    # A list of {content, role} structs: `List` in datasets 4+, `Sequence` or a plain list before.
    inner = getattr(f, "feature", None)
    if inner is None and isinstance(f, list) and f:
        inner = f[0]
    if isinstance(inner, dict) and {k: v.dtype for k, v in inner.items()} == {"content": "string", "role": "string"}:
        return "messages"
    return repr(f)


def load(path, fmt):
    return datasets.load_dataset(fmt, data_files=path, split="train")


def tokenizer_for(texts):
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["<unk>", "<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=2000, special_tokens=special))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(tok):
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LENGTH,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def texts_of(ds):
    out = []
    for row in ds:
        for k in ("prompt", "completion", "chosen", "rejected"):
            if k in row:
                out.append(row[k])
        for m in row.get("messages") or []:
            out.append(m["content"])
    return out


def train_args(cls, out, **extra):
    return cls(
        output_dir=out,
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=0,
        **extra,
    )


def shortest(ds, n, rows=None):
    """The `n` rows (of `rows`, default all) with the least text, so that they fit MAX_LENGTH."""
    rows = range(len(ds)) if rows is None else rows
    size = {i: sum(len(t) for t in texts_of(ds.select([i]))) for i in rows}
    return sorted(size, key=lambda i: (size[i], i))[:n]


def twin(model):
    """A second copy of `model` (TRL's reference model; the trainers would otherwise load one by
    name from the hub)."""
    ref = type(model)(model.config)
    ref.load_state_dict(model.state_dict())
    return ref


def trains(kind, ds, tmp):
    torch.manual_seed(0)
    small = ds.select(shortest(ds, 8))
    tok = tokenizer_for(texts_of(small))
    out = os.path.join(tmp, f"trl-{kind}")
    if kind in ("sft", "sft_messages"):
        model = LlamaForCausalLM(tiny_config(tok))
        trainer = trl.SFTTrainer(
            model=model,
            args=train_args(trl.SFTConfig, out, max_length=MAX_LENGTH),
            train_dataset=small,
            processing_class=tok,
        )
    elif kind == "kto":
        # KTO needs both labels in a batch's reference statistics: take both.
        good = shortest(ds, 4, [i for i, r in enumerate(ds) if r["label"]])
        bad = shortest(ds, 4, [i for i, r in enumerate(ds) if not r["label"]])
        small = ds.select(good + bad)
        tok = tokenizer_for(texts_of(small))
        model = LlamaForCausalLM(tiny_config(tok))
        trainer = trl.KTOTrainer(
            model=model,
            ref_model=twin(model),
            args=train_args(trl.KTOConfig, out, max_length=MAX_LENGTH),
            train_dataset=small,
            processing_class=tok,
        )
    elif kind == "dpo":
        model = LlamaForCausalLM(tiny_config(tok))
        trainer = trl.DPOTrainer(
            model=model,
            ref_model=twin(model),
            args=train_args(trl.DPOConfig, out, max_length=MAX_LENGTH),
            train_dataset=small,
            processing_class=tok,
        )
    elif kind == "reward":
        cfg = tiny_config(tok)
        cfg.num_labels = 1
        model = LlamaForSequenceClassification(cfg)
        trainer = trl.RewardTrainer(
            model=model,
            args=train_args(trl.RewardConfig, out, max_length=MAX_LENGTH),
            train_dataset=small,
            processing_class=tok,
        )
    else:
        raise ValueError(kind)
    result = trainer.train()
    assert result.global_step == 2, result
    loss = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert loss and all(x == x for x in loss), f"no finite loss logged: {trainer.state.log_history}"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "t.db")
        run(binary, db, "ingest", "logs", "data/example/logs.jsonl")
        run(binary, db, "ingest", "feedback", "data/example/feedback.jsonl")
        run(binary, db, "ingest", "feedback", "tests/fixtures/export/edits.jsonl")
        loaded = {}
        for kind, stems in KINDS.items():
            for fmt in ("jsonl", "parquet"):
                out = os.path.join(tmp, f"{kind}-{fmt}")
                run(binary, db, "export", kind, "--out", out, "--format", fmt)
                card = json.load(open(os.path.join(out, "card.json")))
                for stem in stems:
                    path = os.path.join(out, f"{stem}.{fmt}")

                    def columns(stem=stem, path=path, fmt=fmt, card=card):
                        ds = load(path, "json" if fmt == "jsonl" else "parquet")
                        loaded[(stem, fmt)] = ds
                        want = {**COMMON, **COLUMNS[stem]}
                        got = {k: feature_type(v) for k, v in ds.features.items()}
                        assert got == want, f"features {got} != {want}"
                        assert len(ds) == card["rows"], (len(ds), card["rows"])
                        conv = stem == "sft_messages"
                        assert all(is_conversational(ds[i]) == conv for i in range(min(20, len(ds))))

                    check(f"{stem}.{fmt}: load_dataset columns, types, row count, is_conversational", columns)

        def same_rows():
            for stems in KINDS.values():
                for stem in stems:
                    a, b = loaded[(stem, "jsonl")], loaded[(stem, "parquet")]
                    assert a.to_list() == b.to_list(), stem

        check("jsonl and parquet hold the same rows", same_rows)

        def chat_template():
            ds = loaded[("sft_messages", "jsonl")]
            tok = tokenizer_for(texts_of(ds.select(range(4))))
            row = maybe_apply_chat_template(ds[0], tok)
            assert "<|user|>" in row["text"] and "<|assistant|>" in row["text"], row
            assert ds[0]["messages"][1]["content"] in row["text"]
            # A prompt-completion row is left as it is.
            plain = loaded[("sft", "jsonl")][0]
            assert maybe_apply_chat_template(plain, tok)["prompt"] == plain["prompt"]

        check("maybe_apply_chat_template renders the messages form", chat_template)

        for stem, trainer in [
            ("sft", "SFTTrainer"),
            ("sft_messages", "SFTTrainer"),
            ("kto", "KTOTrainer"),
            ("dpo", "DPOTrainer"),
            ("reward", "RewardTrainer"),
        ]:
            for fmt in ("jsonl", "parquet"):
                check(
                    f"{stem}.{fmt}: 2 steps of trl.{trainer} on a tiny random model",
                    lambda stem=stem, fmt=fmt: trains(stem, loaded[(stem, fmt)], tmp),
                )
    passed = sum(ok for _, ok in results)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
