"""Random Sparse Attention as a Hugging Face attention implementation: "adapterkit_rsa".

    from adapterkit.ops.hf import use_rsa
    use_rsa(model, density=0.25, block_size=64, seed=0)      # an already loaded model

    from adapterkit.ops.hf import register
    register()                                               # then, at load time:
    AutoModel.from_pretrained(path, attn_implementation="adapterkit_rsa")

Two things are registered with transformers: the attention function
(`AttentionInterface`) and the mask function (`AttentionMaskInterface`).
Without the second, transformers builds no mask at all for an unknown
implementation, and padding and causal masking would be silently lost.

The mask function hands every layer an `RSAMask`: the (batch, seq) padding mask
and whether attention is causal, which is all the kernel needs. Patterns the
kernel does not express (decoding with a cache, packed sequences, extra mask
functions) carry the dense boolean mask instead, and the layer then runs the
dense reference under the RSA block mask, after saying so once.

Settings live on the model config (`config.adapterkit_rsa`, saved with it), or
process-wide through `configure_rsa(...)` for models that carry none. Each layer
uses its own layout (the seed is mixed with the layer index).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch

from adapterkit.ops.layout import RSAError, cached_layout, check_settings, rsa_token_mask
from adapterkit.ops.reference import masked_attention
from adapterkit.ops.rsa import rsa_attention

logger = logging.getLogger("adapterkit.ops")

ATTENTION_NAME = "adapterkit_rsa"
CONFIG_ATTRIBUTE = "adapterkit_rsa"


@dataclass
class RSAConfig:
    """Random Sparse Attention settings of a model (layout options: `adapterkit.ops.layout`).

    The defaults are the original layout, so settings saved before the options
    existed load unchanged. For classification with a [CLS] token,
    `global_blocks=1, min_random_blocks=1` keeps quality much better (see
    benchmarks/README.md, rsa).
    """

    density: float = 0.25
    block_size: int = 64
    seed: int = 0
    per_layer_layout: bool = True  # mix the layer index into the seed
    global_blocks: int = 0         # leading blocks attended by and attending to every block
    min_random_blocks: int = 0     # random blocks per row besides the diagonal and global ones
    count_diagonal: bool = True    # density counts the diagonal and global blocks too

    def __post_init__(self) -> None:
        check_settings(self.density, self.block_size, self.global_blocks, self.min_random_blocks)
        if not isinstance(self.seed, int):
            raise RSAError(f"RSA seed must be an integer, got {self.seed!r}")
        if not isinstance(self.count_diagonal, bool):
            raise RSAError(f"RSA count_diagonal must be true or false, got {self.count_diagonal!r}")

    def layout_options(self) -> dict:
        """The keyword arguments of `rsa_attention` / `rsa_layout` beyond density and block size."""
        return {"global_blocks": self.global_blocks, "min_random_blocks": self.min_random_blocks,
                "count_diagonal": self.count_diagonal}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RSAConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def layer_seed(self, layer_idx: int | None) -> int:
        if not self.per_layer_layout or layer_idx is None:
            return self.seed
        return (self.seed * 1_000_003 + int(layer_idx) + 1) & 0xFFFFFFFF


_default_config = RSAConfig()


@dataclass(frozen=True)
class RSAMask:
    """What transformers' mask step passes to every adapterkit_rsa layer."""

    key_padding: torch.Tensor | None  # (batch, kv_len) bool, True = real token; None = no padding
    causal: bool
    dense: torch.Tensor | None = None  # (batch, 1, q_len, kv_len) bool for other patterns


def configure_rsa(model=None, *, density: float | None = None, block_size: int | None = None,
                  seed: int | None = None, global_blocks: int | None = None,
                  min_random_blocks: int | None = None, count_diagonal: bool | None = None) -> str:
    """Set Random Sparse Attention settings; returns "adapterkit_rsa" for `attn_implementation=`.

    With a model: the settings go on its config (saved with it) and the model is
    switched to adapterkit_rsa. Without one: they become the process-wide default,
    used by every model that carries no settings of its own, e.g.

        name = configure_rsa(density=0.25)            # what `--attention rsa` does
        AutoModel.from_pretrained(path, attn_implementation=name)

    Arguments left as None keep their current value. Registers with transformers.
    """
    global _default_config
    current = config_of(model) if model is not None else _default_config
    changes = {"density": density, "block_size": block_size, "seed": seed, "global_blocks": global_blocks,
               "min_random_blocks": min_random_blocks, "count_diagonal": count_diagonal}
    new = RSAConfig.from_dict({**current.to_dict(), **{k: v for k, v in changes.items() if v is not None}})
    register()
    if model is None:
        _default_config = new
    else:
        setattr(model.config, CONFIG_ATTRIBUTE, new.to_dict())
        model.set_attn_implementation(ATTENTION_NAME)
    return ATTENTION_NAME


def use_rsa(model, *, density: float = 0.25, block_size: int = 64, seed: int = 0, global_blocks: int = 0,
            min_random_blocks: int = 0, count_diagonal: bool = True):
    """Switch a loaded transformers model to Random Sparse Attention; returns the model."""
    configure_rsa(model, density=density, block_size=block_size, seed=seed, global_blocks=global_blocks,
                  min_random_blocks=min_random_blocks, count_diagonal=count_diagonal)
    return model


def config_of(model_or_module=None) -> RSAConfig:
    """The RSA settings a model (or one of its attention modules) runs with; None: the default."""
    config = getattr(model_or_module, "config", None)
    data = getattr(config, CONFIG_ATTRIBUTE, None)
    return RSAConfig.from_dict(data) if isinstance(data, dict) else _default_config


def _plain_pattern(mask_function, q_length, kv_length, q_offset, kv_offset) -> bool | None:
    """True/False (causal or not) for patterns the kernel expresses; None otherwise."""
    from transformers.masking_utils import bidirectional_mask_function, causal_mask_function

    if not (isinstance(q_offset, int) and isinstance(kv_offset, int)):
        return None
    if q_offset != 0 or kv_offset != 0 or q_length != kv_length:
        return None
    if mask_function is causal_mask_function:
        return True
    if mask_function is bidirectional_mask_function:
        return False
    return None


def rsa_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
             mask_function=None, attention_mask: torch.Tensor | None = None, **kwargs) -> RSAMask:
    """The AttentionMaskInterface function of adapterkit_rsa."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    mask_function = mask_function or causal_mask_function
    causal = _plain_pattern(mask_function, q_length, kv_length, q_offset, kv_offset)
    if causal is not None and (attention_mask is None or attention_mask.shape[-1] == kv_length):
        padding = None if attention_mask is None else attention_mask.to(torch.bool)
        return RSAMask(key_padding=padding, causal=causal)
    kwargs.pop("allow_is_causal_skip", None)
    kwargs.pop("allow_is_bidirectional_skip", None)
    dense = sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length,
                      q_offset=q_offset, kv_offset=kv_offset, mask_function=mask_function,
                      attention_mask=attention_mask, allow_is_causal_skip=False,
                      allow_is_bidirectional_skip=False, **kwargs)
    return RSAMask(key_padding=None, causal=mask_function is causal_mask_function, dense=dense)


_announced: set[str] = set()


def _announce_once(key: str, message: str) -> None:
    if key not in _announced:
        _announced.add(key)
        logger.warning(message)


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(batch, kv_heads, seq, dim) -> (batch, kv_heads * n_rep, seq, dim) for grouped queries."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def _dense_path(module, query, key, value, mask, cfg: RSAConfig, scale: float, causal: bool):
    """Reference attention under the RSA block mask, for masks the kernel cannot take."""
    _, heads, q_len, _ = query.shape
    kv_len = key.shape[2]
    seed = cfg.layer_seed(getattr(module, "layer_idx", None))
    layout = cached_layout(kv_len, heads, cfg.block_size, cfg.density, seed, causal, query.device,
                           **cfg.layout_options())
    q_pos = torch.arange(kv_len - q_len, kv_len, device=query.device)  # queries are the last tokens
    allowed = rsa_token_mask(layout, cfg.block_size, kv_len, causal, q_pos)[None]
    bias = None
    if mask is not None:
        mask = mask[..., -kv_len:]
        if mask.dtype == torch.bool:
            allowed = allowed & mask
        else:
            bias = mask
    return masked_attention(query, key, value, allowed, scale, bias)[0]


def rsa_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                          scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """The AttentionInterface function of adapterkit_rsa: (B, H, S, D) in, (B, S, H, D) out."""
    cfg = config_of(module)
    key = _repeat_kv(key, query.shape[1] // key.shape[1])
    value = _repeat_kv(value, query.shape[1] // value.shape[1])
    scale = query.shape[-1] ** -0.5 if scaling is None else float(scaling)
    if dropout and module.training:
        _announce_once("dropout", f"adapterkit_rsa does not apply attention dropout (p={dropout}); "
                                  "training runs without it")
    same_length = query.shape[2] == key.shape[2]
    if isinstance(attention_mask, RSAMask):
        padding, causal, dense = attention_mask.key_padding, attention_mask.causal, attention_mask.dense
    else:  # no mask step ran (None), or a prepared 4D mask was passed in
        padding, dense = None, attention_mask
        causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", False))
    if dense is None and same_length:
        out = rsa_attention(query, key, value, block_size=cfg.block_size, density=cfg.density,
                            seed=cfg.layer_seed(getattr(module, "layer_idx", None)),
                            attention_mask=padding, causal=causal, scale=scale, **cfg.layout_options())
    else:
        _announce_once("dense", "adapterkit_rsa: this mask pattern (cache, packed sequences or a "
                                "custom mask) runs on the dense reference under the RSA block mask")
        out = _dense_path(module, query, key, value, dense, cfg, scale, causal)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Register "adapterkit_rsa" with transformers' attention and mask interfaces (idempotent)."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, rsa_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, rsa_mask)
