#!/usr/bin/env python3
"""Writes random base models of every encoder family at MiniLM-L6's size (hidden 384, 6 layers,
12 heads, feed-forward 1536) for scripts/bench/bench-encoders.sh: each family's own options as
its real checkpoints set them (RoBERTa's offset positions; ModernBERT's GeGLU, 128-token local
window every layer but each third, mean pooling; DeBERTa-v3's 256 log buckets, shared position
projections, normalised relative embeddings), with the tiny tokenizers of
tests/python/make_encoder_fixtures.py. Random weights: the figures are costs, not quality.

    target/py-export/bin/python scripts/bench/make_encoder_bases.py OUT_DIR
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "python"))

import torch  # noqa: E402
from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast  # noqa: E402

import make_encoder_fixtures as fx  # noqa: E402

SIZE = dict(hidden_size=384, num_attention_heads=12, intermediate_size=1536, num_hidden_layers=6)


def config(family, vocab_size, pad_id, cls_id, sep_id):
    common = dict(vocab_size=vocab_size, pad_token_id=pad_id, **SIZE)
    if family == "bert":
        return AutoConfig.for_model("bert", max_position_embeddings=512, **common)
    if family == "roberta":
        return AutoConfig.for_model("roberta", max_position_embeddings=512 + pad_id + 1, type_vocab_size=1,
                                    bos_token_id=cls_id, eos_token_id=sep_id, **common)
    if family == "deberta-v3":
        return AutoConfig.for_model(
            "deberta-v2", max_position_embeddings=512, relative_attention=True, pos_att_type=["p2c", "c2p"],
            position_buckets=256, max_relative_positions=-1, norm_rel_ebd="layer_norm", share_att_key=True,
            position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7, **common)
    return AutoConfig.for_model(
        "modernbert", max_position_embeddings=8192, global_attn_every_n_layers=3, local_attention=128,
        classifier_pooling="mean", cls_token_id=cls_id, sep_token_id=sep_id, bos_token_id=cls_id,
        eos_token_id=sep_id, **common)


def main():
    out = sys.argv[1]
    for family in ["bert", "roberta", "modernbert", "deberta-v3"]:
        if family == "bert":
            tok, kw = fx.wordpiece()
        elif family == "roberta":
            tok, kw = fx.byte_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "roberta")
        elif family == "modernbert":
            tok, kw = fx.byte_bpe(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"], "bert")
        else:
            tok, kw = fx.unigram("deberta")
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kw)
        torch.manual_seed(0)
        cfg = config(family, tok.get_vocab_size(), fast.pad_token_id, fast.cls_token_id, fast.sep_token_id)
        model = AutoModel.from_config(cfg)
        dest = os.path.join(out, family)
        model.save_pretrained(dest, safe_serialization=True)
        fast.save_pretrained(dest)
        n = sum(p.numel() for p in model.parameters())
        print(f"{family}: {dest} ({n / 1e6:.1f}M parameters)")


if __name__ == "__main__":
    main()
