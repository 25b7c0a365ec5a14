#!/usr/bin/env python3
"""Writes the parity fixtures of the encoder families evalloop loads (tests/fixtures/encoders/).

For each family (bert, roberta, xlm-roberta, modernbert, and DeBERTa as v3 configures it,
deberta-v3, and with the older options, deberta-v2) transformers builds a small random
sequence classifier from a config (hidden 32, 4 heads, 2 or 3 layers, 3 outputs), every weight
spread so that outputs are of order 1, and saves it in the Hugging Face layout
(config.json, model.safetensors, tokenizer.json) with a tiny tokenizer of the family's kind
trained here (WordPiece for BERT, byte-level BPE for RoBERTa and ModernBERT, Unigram for
XLM-RoBERTa and DeBERTa). expected.json holds a few (prompt, output) pairs, the ids transformers' tokenizer
gives them as pairs, and transformers' logits in eval mode (eager attention, float32).

The Rust test crates/evalloop-model/tests/encoder_parity.rs tokenizes the same pairs with
evalloop's tokenizer and checks the ids and the logits (within 1e-4).

    scripts/python-env.sh           # torch 2.15.0, transformers 5.23.0 in target/py-export
    target/py-export/bin/python tests/python/make_encoder_fixtures.py [OUT_DIR]

The weights are seeded, but the tokenizers trainers do not always give the same vocabulary
run to run (ties between equally frequent pieces), so a rerun writes equivalent, not
byte-identical, fixtures; the versions are recorded in each expected.json.
"""
import json
import os
import shutil
import sys

import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedTokenizerFast

CORPUS = [
    "The answer is correct and helpful.",
    "What is the capital of France? Paris is the capital of France.",
    "The summary leaves out the main point of the article.",
    "Why did the model say that? It was wrong, the numbers do not add up.",
    "A good answer explains how and why; a poor one only repeats the question.",
    "Le résumé est bon, mais trop long.",
    "Yes, no, maybe: the rating scale has five points.",
] * 4

PAIRS = [
    ["What is the capital of France?", "Paris is the capital of France."],
    ["Summarize the article.", "The summary leaves out the main point, and the numbers do not add up at all."],
    ["Why?", "No."],
    ["Rate the answer from one to five, and say why the rating is what it is.", "Five: it is correct."],
]


def wordpiece():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    fast = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return tok, fast


def byte_bpe(special, template):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    if template == "roberta":
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), add_prefix_space=False
        )
        fast = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                    sep_token="</s>", mask_token="<mask>")
    else:
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
        )
        fast = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return tok, fast


def unigram(template="xlm-roberta"):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    if template == "deberta":
        # DeBERTa-v3's layout: [PAD] [CLS] [SEP] [UNK] first, [CLS] A [SEP] B [SEP], type ids 0 then 1.
        special = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
        tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=150, special_tokens=special, unk_token="[UNK]"))
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
        fast = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
        return tok, fast
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=150, special_tokens=special, unk_token="<unk>"))
    s, e = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    # XLM-RoBERTa's template: <s> A </s></s> B </s>, every type id 0.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", s), ("</s>", e)]
    )
    fast = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                sep_token="</s>", mask_token="<mask>")
    return tok, fast


def family_config(family, vocab_size, pad_id, cls_id, sep_id):
    common = dict(vocab_size=vocab_size, hidden_size=32, num_attention_heads=4, intermediate_size=48,
                  num_labels=3, pad_token_id=pad_id)
    if family == "bert":
        return AutoConfig.for_model("bert", num_hidden_layers=2, max_position_embeddings=128, **common)
    if family in ("roberta", "xlm-roberta"):
        return AutoConfig.for_model(family, num_hidden_layers=2, max_position_embeddings=128 + pad_id + 1,
                                    type_vocab_size=1, bos_token_id=cls_id, eos_token_id=sep_id, **common)
    if family == "deberta-v3":
        # v3's options: log buckets (8 here, so that distances of the pairs are bucketed), a shared
        # key projection, normalised relative embeddings, no absolute positions, no token types.
        return AutoConfig.for_model(
            "deberta-v2", num_hidden_layers=2, max_position_embeddings=128, relative_attention=True,
            pos_att_type=["p2c", "c2p"], position_buckets=8, max_relative_positions=-1, norm_rel_ebd="layer_norm",
            share_att_key=True, position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7, **common)
    if family == "deberta-v2":
        # The older options: own pos_key_proj / pos_query_proj, no buckets, absolute positions and
        # token types, pos_att_type as a string.
        return AutoConfig.for_model(
            "deberta-v2", num_hidden_layers=2, max_position_embeddings=128, relative_attention=True,
            pos_att_type="c2p|p2c", max_relative_positions=24, share_att_key=False, position_biased_input=True,
            type_vocab_size=2, layer_norm_eps=1e-7, **common)
    # Three layers: global, local, global; a local window of 8 tokens (4 either side), shorter
    # than most of the pairs, so the sliding-window mask matters.
    return AutoConfig.for_model(
        "modernbert", num_hidden_layers=3, max_position_embeddings=128, global_attn_every_n_layers=2,
        local_attention=8, global_rope_theta=160000.0, local_rope_theta=10000.0, classifier_pooling="mean",
        cls_token_id=cls_id, sep_token_id=sep_id, bos_token_id=cls_id, eos_token_id=sep_id, **common)


def spread_weights(model, seed):
    """Replaces every parameter by a draw of order 1 / sqrt(fan-in), LayerNorm weights around 1,
    so that the logits are of order 1 and a wrong op shows far above 1e-4."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name.lower()):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g) if name.endswith("weight")
                        else 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)


def build(family, out_dir):
    if family == "bert":
        tok, fast_kw = wordpiece()
    elif family == "roberta":
        tok, fast_kw = byte_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "roberta")
    elif family == "xlm-roberta":
        tok, fast_kw = unigram()
    elif family.startswith("deberta"):
        tok, fast_kw = unigram("deberta")
    else:
        tok, fast_kw = byte_bpe(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"], "bert")
    with_types = family in ("bert", "deberta-v2")
    names = ["input_ids", "token_type_ids", "attention_mask"] if with_types else ["input_ids", "attention_mask"]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=names, **fast_kw)
    pad_id = fast.pad_token_id
    cfg = family_config(family, tok.get_vocab_size(), pad_id, fast.cls_token_id, fast.sep_token_id)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(cfg, attn_implementation="eager")
    spread_weights(model, seed=1)
    model.eval()
    enc = fast([p[0] for p in PAIRS], [p[1] for p in PAIRS], padding=True, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if with_types:
        inputs["token_type_ids"] = enc["token_type_ids"]
    with torch.no_grad():
        logits = model(**inputs).logits
    dest = os.path.join(out_dir, family)
    shutil.rmtree(dest, ignore_errors=True)
    model.save_pretrained(dest, safe_serialization=True)
    fast.save_pretrained(dest)
    mask = enc["attention_mask"].tolist()
    expected = {
        "family": family,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
        "pairs": PAIRS,
        "input_ids": [[i for i, m in zip(row, mr) if m] for row, mr in zip(enc["input_ids"].tolist(), mask)],
        "logits": logits.double().tolist(),
    }
    with open(os.path.join(dest, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(dest, n)) for n in os.listdir(dest))
    print(f"{family}: {dest} ({size // 1024} KiB), logits {logits[0].tolist()}")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "fixtures", "encoders")
    torch.use_deterministic_algorithms(True)
    for family in ["bert", "roberta", "xlm-roberta", "modernbert", "deberta-v3", "deberta-v2"]:
        build(family, out_dir)


if __name__ == "__main__":
    main()
