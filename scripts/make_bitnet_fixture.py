#!/usr/bin/env python3
"""Write a tiny random BitNet b1.58 checkpoint in Hugging Face's packed format, and its
reference logits from Hugging Face transformers.

server/tests/data/hf_tiny_bitnet/ gets config.json (BitNetForCausalLM with the `bitnet`
quantization config: offline BitLinear), model.safetensors, the word-level tokenizer of the
tiny Llama fixture, and reference.json: for a few token sequences, the logits of every position.

How it is made: a BitNetForCausalLM with random weights (torch's default initialisation,
seeded); every projection of every layer is ternarised with BitNet's absmean rule (s =
mean|W|, T = round(W / s) clamped to -1..1), packed with transformers' own `pack_weights`
(uint8, four rows per byte) and stored with `weight_scale = 1 / s`. The embeddings, norms
and lm_head stay float32. The directory is then loaded with
`BitNetForCausalLM.from_pretrained`, which runs BitLinear (per-token int8 activations, ternary
weights), and its logits are the reference (`logits`).

A second reference (`logits_f16_attention`) runs the same model with transformers' eager
attention changed in one way: queries, keys, values and attention probabilities are rounded to
f16 where Ryzanstein's attention (llama.cpp's) keeps them in f16 (its KV cache is f16). The
int8 re-quantisation of every BitLinear input turns those small roundings into logit
differences of a few tenths, so this is the reference the server matches closely; the plain
one bounds how far the f16 cache takes it.

Needs torch, transformers, accelerate and safetensors from PyPI in a venv of its own (the
fixture is committed; CI does not run this). The PyPI torch wheel for Linux needs its CUDA
runtime packages installed too (pip installs them), but runs on the CPU. Rerun:
python3 scripts/make_bitnet_fixture.py (it rewrites server/tests/data/hf_tiny_bitnet).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# BitLinear's helpers are wrapped in torch.compile; eager mode gives the same numbers without
# a C++ toolchain.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import BitNetConfig, BitNetForCausalLM  # noqa: E402
from transformers.integrations.bitnet import pack_weights  # noqa: E402
from transformers.models.bitnet import modeling_bitnet  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "server/tests/data/hf_tiny_bitnet"
TOKENIZER_FROM = ROOT / "server/tests/data/hf_tiny_llama"
SEED = 20261207

# Rows of every projection are multiples of 4 (packing) and its inputs multiples of 128 (the
# ternary kernels' block).
CONFIG = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    rms_norm_eps=1e-5,
    max_position_embeddings=128,
    vocab_size=48,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    hidden_act="relu2",
    rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
)
QUANT = {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

SEQUENCES = [[1, 3, 10, 20, 30, 5], [1, 47, 46, 45, 12, 7, 9, 33], [4]]


def ternarise(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = w.abs().mean().clamp(min=1e-5)
    t = (w / s).round().clamp(-1, 1)
    return t, s


def f16_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' eager attention with f16 queries, keys, values and probabilities."""
    r = lambda t: t.half().float()  # noqa: E731
    key = modeling_bitnet.repeat_kv(r(key), module.num_key_value_groups)
    value = modeling_bitnet.repeat_kv(r(value), module.num_key_value_groups)
    weights = torch.matmul(r(query), key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = r(torch.nn.functional.softmax(weights, dim=-1, dtype=torch.float32))
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def reference_logits(attention=None) -> list[list[list[float]]]:
    plain = modeling_bitnet.eager_attention_forward
    if attention is not None:
        modeling_bitnet.eager_attention_forward = attention
    try:
        model = BitNetForCausalLM.from_pretrained(OUT, dtype=torch.float32, attn_implementation="eager").eval()
        kinds = {type(m).__name__ for m in model.modules()}
        assert "BitLinear" in kinds, f"transformers did not load BitLinear layers: {kinds}"
        with torch.no_grad():
            return [[[round(float(v), 6) for v in row] for row in model(torch.tensor([ids])).logits[0]]
                    for ids in SEQUENCES]
    finally:
        modeling_bitnet.eager_attention_forward = plain


def main() -> None:
    torch.manual_seed(SEED)
    model = BitNetForCausalLM(BitNetConfig(**CONFIG)).eval()
    state = {}
    with torch.no_grad():
        for name, p in model.state_dict().items():
            # Larger than the default 0.02 so the tiny model's logits are far from flat.
            if name.endswith("_norm.weight") or name.endswith("layernorm.weight") or name == "model.norm.weight":
                state[name] = (1.0 + 0.1 * torch.randn_like(p)).contiguous()
                continue
            w = torch.randn_like(p) * 0.5
            module = name.rsplit(".", 2)[-2]
            if module in PROJECTIONS:
                t, s = ternarise(w)
                state[name] = pack_weights(t.to(torch.int8).clone())
                state[name[: -len("weight")] + "weight_scale"] = (1.0 / s).reshape(1).to(torch.float32)
            else:
                state[name] = w.contiguous()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    save_file(state, str(OUT / "model.safetensors"), metadata={"format": "pt"})
    config = {"architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "torch_dtype": "float32",
              "quantization_config": QUANT, **CONFIG}
    (OUT / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_FROM / f, OUT / f)

    plain, f16 = reference_logits(), reference_logits(f16_attention)
    sequences = [{"ids": ids, "logits": p, "logits_f16_attention": h} for ids, p, h in zip(SEQUENCES, plain, f16)]
    (OUT / "reference.json").write_text(json.dumps({
        "generated_by": f"transformers {__import__('transformers').__version__} BitNetForCausalLM "
                        f"(BitLinear, offline packed weights), torch {torch.__version__}",
        "seed": SEED,
        "source": "scripts/make_bitnet_fixture.py",
        "sequences": sequences,
    }) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
