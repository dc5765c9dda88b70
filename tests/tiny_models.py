"""Tiny Hugging Face models built from configs (no downloads), one entry per family.

`build(family)` returns (model, inputs) with a classification-style head where the family has
one; inputs are a batch of 2 sequences of 7 tokens ending in token 2 (an eos for BART-likes).
"""
from __future__ import annotations

import torch
import transformers as T

H = 32
_ATTN = dict(num_attention_heads=2)

FAMILIES = {
    "bert": ("BertConfig", dict(hidden_size=H, num_hidden_layers=4, intermediate_size=64, **_ATTN), "BertForSequenceClassification"),
    "roberta": ("RobertaConfig", dict(hidden_size=H, num_hidden_layers=4, intermediate_size=64, **_ATTN), "RobertaForSequenceClassification"),
    "distilbert": ("DistilBertConfig", dict(dim=H, n_layers=4, n_heads=2, hidden_dim=64), "DistilBertForSequenceClassification"),
    "gpt2": ("GPT2Config", dict(n_embd=H, n_layer=4, n_head=2, bos_token_id=2, eos_token_id=2), "GPT2ForSequenceClassification"),
    "llama": ("LlamaConfig", dict(hidden_size=H, num_hidden_layers=4, num_key_value_heads=1, intermediate_size=64, **_ATTN), "LlamaForSequenceClassification"),
    "t5": ("T5Config", dict(d_model=H, num_layers=3, num_decoder_layers=3, num_heads=2, d_kv=16, d_ff=64), "T5ForConditionalGeneration"),
    "bart": ("BartConfig", dict(d_model=H, encoder_layers=3, decoder_layers=3, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64), "BartForSequenceClassification"),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=H, num_hidden_layers=4, intermediate_size=64, **_ATTN), "GPTNeoXForSequenceClassification"),
    "mistral": ("MistralConfig", dict(hidden_size=H, num_hidden_layers=4, num_key_value_heads=1, intermediate_size=64, **_ATTN), "MistralForSequenceClassification"),
    "qwen2": ("Qwen2Config", dict(hidden_size=H, num_hidden_layers=4, num_key_value_heads=1, intermediate_size=64, **_ATTN), "Qwen2ForSequenceClassification"),
    "electra": ("ElectraConfig", dict(hidden_size=H, embedding_size=H, num_hidden_layers=4, intermediate_size=64, **_ATTN), "ElectraForSequenceClassification"),
    "albert": ("AlbertConfig", dict(hidden_size=H, embedding_size=16, num_hidden_layers=4, intermediate_size=64, **_ATTN), "AlbertForSequenceClassification"),
    "deberta_v2": ("DebertaV2Config", dict(hidden_size=H, num_hidden_layers=4, intermediate_size=64, **_ATTN), "DebertaV2ForSequenceClassification"),
    "mpnet": ("MPNetConfig", dict(hidden_size=H, num_hidden_layers=4, intermediate_size=64, **_ATTN), "MPNetForSequenceClassification"),
    "opt": ("OPTConfig", dict(hidden_size=H, num_hidden_layers=4, ffn_dim=64, word_embed_proj_dim=H, **_ATTN), "OPTForSequenceClassification"),
    "falcon": ("FalconConfig", dict(hidden_size=H, num_hidden_layers=4, **_ATTN), "FalconForSequenceClassification"),
    "bloom": ("BloomConfig", dict(hidden_size=H, n_layer=4, n_head=2), "BloomForSequenceClassification"),
    "phi": ("PhiConfig", dict(hidden_size=H, num_hidden_layers=4, intermediate_size=64, **_ATTN), "PhiForSequenceClassification"),
    "gemma": ("GemmaConfig", dict(hidden_size=H, num_hidden_layers=4, num_key_value_heads=1, intermediate_size=64, head_dim=16, **_ATTN), "GemmaForSequenceClassification"),
    "mixtral": ("MixtralConfig", dict(hidden_size=H, num_hidden_layers=4, num_key_value_heads=1, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, **_ATTN), "MixtralForSequenceClassification"),
    "gptj": ("GPTJConfig", dict(n_embd=H, n_layer=4, n_head=2, rotary_dim=8, bos_token_id=2, eos_token_id=2), "GPTJForSequenceClassification"),
}


def build(family: str, seed: int = 0):
    config_name, kwargs, model_name = FAMILIES[family]
    config = getattr(T, config_name)(vocab_size=99, pad_token_id=0, **kwargs)
    torch.manual_seed(seed)
    model = getattr(T, model_name)(config).eval()
    return model, inputs_for(family)


def inputs_for(family: str, batch: int = 2, length: int = 7, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (batch, length), generator=g)
    ids[:, -1] = 2
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family == "t5":
        inputs["decoder_input_ids"] = ids
    return inputs


def layers_per_stack(family: str) -> list[int]:
    _, kwargs, _ = FAMILIES[family]
    if family in ("t5", "bart"):
        return [3, 3]
    if family == "albert":
        return [1]  # ALBERT shares one layer across depth: one adapted layer, applied 4 times
    return [4]


def write_tiny_bert(folder, layers: int = 2):
    """A width-32 BERT with `layers` layers and the real all-MiniLM-L6-v2 tokenizer in `folder`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from adapterkit.backbone import load_tokenizer

    tokenizer = load_tokenizer(None)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
