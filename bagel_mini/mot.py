"""Mixture of Transformer experts (paper section 2.4, Figure 2): the decoder layer, the decoder stack
and its KV cache.

Every token belongs to one expert by its modality (hard routing): text and ViT tokens to the
*understanding* expert, VAE tokens to the *generation* expert. An expert owns the parts of a layer
listed below; the attention softmax runs once over the tokens of both experts, so each expert reads
the other's keys and values. The three variants of the paper's ablation differ only in which parts
the generation expert owns; the FLOPs per token are the same:

    dense  nothing: every token uses the same weights
    moe    the MLP
    mot    everything: both norms, q/k/v/o projections, q/k norms, MLP (and a final norm)

One code path serves training (a packed sequence under a generalized causal mask) and inference
(new tokens read a KV cache; text, ViT and clean VAE tokens extend it, noised VAE queries do not).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.attention.flex_attention import BlockMask

from bagel_mini.attention import SampleMask, attend, context_mask, in_order
from bagel_mini.config import LLMConfig
from bagel_mini.qwen2 import Attention, RMSNorm, SwiGLU, rotary_cos_sin

PARTS = ("input_norm", "attn", "post_attention_norm", "mlp")
GENERATION_PARTS = {"dense": (), "moe": ("mlp",), "mot": PARTS}


@dataclass
class Route:
    """Which rows of a sequence go to which expert, and the sequence sorted by expert.

    The decoder runs its layers on the sequence in expert order (`order`: the understanding rows, then the
    generation rows), so that each expert's tokens are one contiguous slice in every part of every layer.
    Routing each part's rows instead (a gather, then a scatter back, and both again in the backward pass)
    gives the same numbers and makes a toy training step 13% to 19% slower. `inverse` puts the rows back
    in sequence order at the end.
    """

    und: Tensor  # (n_und,) row indexes of understanding tokens (text, ViT)
    gen: Tensor  # (n_gen,) row indexes of generation tokens (VAE)
    order: Tensor  # (L,) the sequence row of each token in expert order: und, then gen
    inverse: Tensor  # (L,) the place in expert order of each sequence row
    in_place: bool  # the sequence is in expert order already (one expert's tokens, say): nothing to sort

    @classmethod
    def from_mask(cls, is_gen: Tensor) -> "Route":
        und, gen = (~is_gen).nonzero().squeeze(1), is_gen.nonzero().squeeze(1)
        order = torch.cat([und, gen])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        return cls(und, gen, order, inverse, len(und) == 0 or len(gen) == 0 or bool(und[-1] < gen[0]))


def run_experts(und: Callable, gen: Callable, route: Route, *inputs: Tensor):
    """und(*rows) on the understanding rows of `inputs`, gen(*rows) on the generation rows, joined again.

    `inputs` are in expert order (Route), so each expert's rows are a slice: no gather, no scatter.
    `und` and `gen` are a part's two modules, or one method of each (`attn.qkv`). A shared part passes
    the same one twice (`und == gen`: one module, or one module's method) and runs once over all rows;
    so does either expert alone on a sequence of one modality. They may return a tensor or a tuple.
    """
    if und == gen or len(route.gen) == 0:
        return und(*inputs)
    if len(route.und) == 0:
        return gen(*inputs)
    split = len(route.und)
    und_out = und(*(x[:split] for x in inputs))
    gen_out = gen(*(x[split:] for x in inputs))
    if isinstance(und_out, tuple):
        return tuple(torch.cat([a, b]) for a, b in zip(und_out, gen_out))
    return torch.cat([und_out, gen_out])


def make_part(name: str, config: LLMConfig) -> nn.Module:
    if name in ("input_norm", "post_attention_norm"):
        return RMSNorm(config.hidden_size, config.rms_norm_eps)
    return Attention(config) if name == "attn" else SwiGLU(config)


class DecoderLayer(nn.Module):
    """A pre-norm Qwen2 layer whose parts are routed per token to the understanding or generation expert."""

    def __init__(self, config: LLMConfig):
        super().__init__()
        self.und = nn.ModuleDict({name: make_part(name, config) for name in PARTS})
        self.gen = nn.ModuleDict({name: make_part(name, config) for name in GENERATION_PARTS[config.architecture]})
        # The official trainer's freeze_und (train.py --freeze-und): the understanding tokens' attention output
        # is detached, so that no gradient reaches them through the generation tokens they attend to; with
        # the understanding weights frozen, only the generation path trains and every answer stays the same.
        self.freeze_und = False

    def experts(self, part: str) -> tuple[nn.Module, nn.Module]:
        """The understanding and generation module of a part (the same module when shared)."""
        return self.und[part], self.gen[part] if part in self.gen else self.und[part]

    def forward(
        self,
        x: Tensor,  # (L, hidden) in expert order (Route), as are cos, sin and the mask's rows and new columns
        cos: Tensor,  # (L, head_dim)
        sin: Tensor,
        route: Route,
        mask: Tensor | SampleMask | BlockMask | None,  # (L, S + L): the L new tokens against S cached + L new
        past: tuple[Tensor, Tensor] | None = None,  # cached keys and values, each (S, kv_heads, head_dim)
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Returns the new hidden states and the keys and values of the L new tokens, in expert order."""
        und_attn, gen_attn = self.experts("attn")
        h = run_experts(*self.experts("input_norm"), route, x)
        q, k, v = run_experts(und_attn.qkv, gen_attn.qkv, route, h, cos, sin)
        keys, values = (k, v) if past is None else (torch.cat([past[0], k]), torch.cat([past[1], v]))
        o = attend(q, keys, values, mask)  # one softmax over the tokens of both experts
        und_o_proj = (lambda rows: und_attn.o_proj(rows).detach()) if self.freeze_und else und_attn.o_proj
        x = x + run_experts(und_o_proj, gen_attn.o_proj, route, o)
        h = run_experts(*self.experts("post_attention_norm"), route, x)
        x = x + run_experts(*self.experts("mlp"), route, h)
        return x, (k, v)


@dataclass
class KVCache:
    """Keys and values of a context, one (S, kv_heads, head_dim) tensor per layer.

    Keys are stored after QK-norm and RoPE, so a cached token is never recomputed. Extending a cache
    returns a new one and leaves the old intact: CFG keeps contexts that differ only in their tail.
    """

    keys: list[Tensor]
    values: list[Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[0]

    @classmethod
    def concatenate(cls, caches: list["KVCache"]) -> "KVCache":
        """Several contexts side by side, for running one query block against each at once (CFG)."""
        keys = [torch.cat(layer) for layer in zip(*(cache.keys for cache in caches))]
        values = [torch.cat(layer) for layer in zip(*(cache.values for cache in caches))]
        return cls(keys, values)


class LanguageModel(nn.Module):
    """The Qwen2 decoder with routed layers: token embedding, layers, final norm per expert, lm_head."""

    def __init__(self, config: LLMConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # MoE and MoT also give the generation expert its own final norm.
        self.norm_gen = RMSNorm(config.hidden_size, config.rms_norm_eps) if config.architecture != "dense" else None
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, x: Tensor, positions: Tensor, is_gen: Tensor, mask: Tensor | SampleMask | BlockMask) -> Tensor:
        """The training pass over one packed sequence.

        x: (L, hidden) input embeddings; positions: (L,) RoPE position ids; is_gen: (L,) bool, True
        for VAE tokens; mask: (L, L) boolean, per-sample or FlexAttention block mask (attention.py).
        Returns the final hidden states (L, hidden), normed by each token's expert.
        """
        hidden, _ = self._run(x, positions, is_gen, mask, cache=None)
        return hidden

    def empty_cache(self) -> KVCache:
        """A cache with no tokens, on the device and in the dtype of the weights."""
        weight = self.embed_tokens.weight
        empty = weight.new_zeros(0, self.config.num_key_value_heads, self.config.head_dim)
        return KVCache(keys=[empty] * len(self.layers), values=[empty] * len(self.layers))

    def extend(
        self, x: Tensor, positions: Tensor, is_gen: Tensor, cache: KVCache, causal: bool
    ) -> tuple[Tensor, KVCache]:
        """Run a block of new context tokens (text: causal; ViT or clean VAE image: full) that join the cache.

        The block sees the whole cache. Returns its hidden states and the extended cache.
        """
        mask = context_mask(len(x), cache.length, causal, device=x.device)
        hidden, new = self._run(x, positions, is_gen, mask, cache)
        keys = [torch.cat([old, k]) for old, (k, _) in zip(cache.keys, new)]
        values = [torch.cat([old, v]) for old, (_, v) in zip(cache.values, new)]
        return hidden, KVCache(keys, values)

    def query(self, x: Tensor, positions: Tensor, is_gen: Tensor, cache: KVCache, mask: Tensor | None = None) -> Tensor:
        """Run a block that reads the cache without joining it (a noised image being generated).

        By default the block sees the whole cache and itself; `mask` (new, cached + new) overrides that,
        e.g. to run several blocks side by side against several caches (attention.branches_mask).
        """
        hidden, _ = self._run(x, positions, is_gen, mask, cache)
        return hidden

    def _run(self, x, positions, is_gen, mask, cache: KVCache | None):
        length = x.shape[0]
        if positions.shape != (length,) or is_gen.shape != (length,):
            raise ValueError(
                f"sequence has {length} tokens but positions are {tuple(positions.shape)} "
                f"and is_gen is {tuple(is_gen.shape)}"
            )
        past_length = 0 if cache is None else cache.length
        if isinstance(mask, Tensor) and mask.shape != (length, past_length + length):
            raise ValueError(
                f"attention mask is {tuple(mask.shape)} but the sequence has {length} new tokens "
                f"and {past_length} cached ones"
            )
        route = Route.from_mask(is_gen)
        if not route.in_place:
            x, positions, mask = x[route.order], positions[route.order], in_order(mask, route.order, past_length)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
        new = []
        for i, layer in enumerate(self.layers):
            past = None if cache is None else (cache.keys[i], cache.values[i])
            x, (k, v) = layer(x, cos, sin, route, mask, past)
            new.append((k, v) if route.in_place else (k[route.inverse], v[route.inverse]))  # as a cache holds them
        norm_gen = self.norm if self.norm_gen is None else self.norm_gen
        hidden = run_experts(self.norm, norm_gen, route, x)
        return (hidden if route.in_place else hidden[route.inverse]), new
