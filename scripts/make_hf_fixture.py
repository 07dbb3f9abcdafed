#!/usr/bin/env python3
"""Write a tiny random Llama checkpoint in Hugging Face format, and its reference logits.

server/tests/data/hf_tiny_llama/ gets config.json, two safetensors shards with
model.safetensors.index.json, tokenizer.json (a word-level vocabulary), tokenizer_config.json
(with a chat template) and reference.json: for a few token sequences, the logits of every
position.

The reference comes from Hugging Face transformers' LlamaForCausalLM when torch and
transformers are importable; otherwise from an independent float64 NumPy implementation of the
same forward pass (RMSNorm, rotate-half RoPE, grouped-query causal attention, SwiGLU, tied
embeddings), which the script cross-checks against transformers whenever both are available.
`reference.json` records which produced it. Rerun: python3 scripts/make_hf_fixture.py
(needs numpy; torch + transformers optional).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "server/tests/data/hf_tiny_llama"
SEED = 20261124

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 128,
    "vocab_size": 48,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}

WORDS = ["<unk>", "<s>", "</s>"] + (
    "the a of to and in is it that was for on are with as be at by this from or one had not but "
    "what all were when we there can an your which their said if do will each about how up out"
).split()
assert len(WORDS) == CONFIG["vocab_size"], len(WORDS)

SEQUENCES = [[1, 3, 10, 20, 30, 5], [1, 47, 46, 45], [4]]


def weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    c = CONFIG
    d, ff, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd

    def lin(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32)

    w = {"model.embed_tokens.weight": (0.5 * rng.standard_normal((c["vocab_size"], d))).astype(np.float32)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm()
        w[p + "self_attn.q_proj.weight"] = lin(q, d)
        w[p + "self_attn.k_proj.weight"] = lin(kv, d)
        w[p + "self_attn.v_proj.weight"] = lin(kv, d)
        w[p + "self_attn.o_proj.weight"] = lin(d, q)
        w[p + "post_attention_layernorm.weight"] = norm()
        w[p + "mlp.gate_proj.weight"] = lin(ff, d)
        w[p + "mlp.up_proj.weight"] = lin(ff, d)
        w[p + "mlp.down_proj.weight"] = lin(d, ff)
    w["model.norm.weight"] = norm()
    return w


def forward_numpy(w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """Logits (positions x vocab) in float64."""
    c = CONFIG
    hd, nh, nkv, eps = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"], c["rms_norm_eps"]
    W = {k: v.astype(np.float64) for k, v in w.items()}
    x = W["model.embed_tokens.weight"][ids]
    t = len(ids)
    inv_freq = 1.0 / (c["rope_theta"] ** (np.arange(0, hd, 2) / hd))
    ang = np.outer(np.arange(t), inv_freq)
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def rms(v, g):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * g

    def rope(v):  # v: (t, heads, hd)
        half = hd // 2
        rot = np.concatenate([-v[..., half:], v[..., :half]], -1)
        return v * cos[:, None, :] + rot * sin[:, None, :]

    mask = np.triu(np.full((t, t), -np.inf), 1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = rope((h @ W[p + "self_attn.q_proj.weight"].T).reshape(t, nh, hd))
        k = rope((h @ W[p + "self_attn.k_proj.weight"].T).reshape(t, nkv, hd))
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(t, nkv, hd)
        group = nh // nkv
        out = np.zeros((t, nh, hd))
        for head in range(nh):
            s = q[:, head] @ k[:, head // group].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            out[:, head] = s @ v[:, head // group]
        x = x + out.reshape(t, nh * hd) @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g = h @ W[p + "mlp.gate_proj.weight"].T
        u = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (g / (1.0 + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
    return rms(x, W["model.norm.weight"]) @ W["model.embed_tokens.weight"].T


def forward_transformers(w, ids):
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        return None
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in CONFIG.items() if k != "architectures"}))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in w.items()}, strict=False)
    model = model.double().eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def tokenizer_json() -> dict:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": WORDS[i], "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i in range(3)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {w: i for i, w in enumerate(WORDS)}, "unk_token": "<unk>"},
    }


def main() -> None:
    rng = np.random.default_rng(SEED)
    w = weights(rng)
    OUT.mkdir(parents=True, exist_ok=True)
    names = list(w)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    weight_map = {}
    for fname, part in shards.items():
        write_safetensors(OUT / fname, {n: w[n] for n in part})
        weight_map.update({n: fname for n in part})
    total = sum(v.nbytes for v in w.values())
    (OUT / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1) + "\n")
    (OUT / "config.json").write_text(json.dumps(CONFIG, indent=1) + "\n")
    (OUT / "tokenizer.json").write_text(json.dumps(tokenizer_json(), indent=1) + "\n")
    (OUT / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True,
        "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}",
    }, indent=1) + "\n")
    refs, source = [], "numpy-float64"
    for ids in SEQUENCES:
        logits = forward_numpy(w, ids)
        hf = forward_transformers(w, ids)
        if hf is not None:
            diff = float(np.abs(hf - logits).max())
            assert diff < 1e-6, f"transformers and the NumPy forward differ by {diff}"
            logits, source = hf, "transformers LlamaForCausalLM (float64)"
        refs.append({"ids": ids, "logits": [[round(float(v), 6) for v in row] for row in logits]})
    (OUT / "reference.json").write_text(json.dumps({
        "generated_by": "scripts/make_hf_fixture.py", "seed": SEED, "source": source, "sequences": refs,
    }, indent=1) + "\n")
    print(f"wrote {OUT} ({source})")


if __name__ == "__main__":
    main()
