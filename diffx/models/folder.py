"""The DiffX model folder: everything a sampler needs, in one folder that can be moved or uploaded.

Laid out like a diffusers pipeline folder::

    models/unet/
      config.json, diffusion_pytorch_model.safetensors   the DiffX-UNet
      vae/        config.json, *.safetensors               a copy of the MP-VAE it was trained on
      scheduler/  scheduler_config.json                    the noise schedule of training
      diffx.json                                           the model card (below)

Every path in the card is relative to the folder itself. The card holds the facts a later stage must not
re-read from params: the dataset spec, the text encoder and its token limit, layout slots.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from diffx.data.spec import DatasetSpec
from diffx.errors import DataError

MODEL_CARD = "diffx.json"
VAE_FOLDER = "vae"
SCHEDULER_FOLDER = "scheduler"
SCHEDULER_CONFIG = "scheduler_config.json"


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: DatasetSpec  # modalities (with channels and bit depth), classes, layout kind
    text_encoder: str
    text_tokenizer: str | None = None
    max_tokens: int
    mask_caption_padding: bool = True  # cards written before the switch masked it
    max_objects: int
    steps: int
    vae: str = VAE_FOLDER
    scheduler: str = SCHEDULER_FOLDER


def write_model_folder(folder: Path, *, vae: str, scheduler: Any, card: ModelCard) -> None:
    """Add the VAE copy, the schedule and the card to a folder that already holds the UNet's weights."""
    source = Path(vae)
    target = folder / card.vae
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.glob("*.json")) + sorted(source.glob("*.safetensors")):
        shutil.copyfile(file, target / file.name)  # byte copies: the digest of the folder names the VAE exactly
    scheduler.save_config(str(folder / card.scheduler))
    (folder / MODEL_CARD).write_text(json.dumps(card.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")


class ModelFolder:
    """A train_unet output read back: the card, and where its parts lie."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        card_path = self.root / MODEL_CARD
        if not card_path.is_file():
            raise DataError(str(self.root), f"no {MODEL_CARD}; expected a train_unet output folder")
        try:
            self.card = ModelCard.model_validate(json.loads(card_path.read_text(encoding="utf-8")))
        except (ValueError, ValidationError) as err:
            raise DataError(str(card_path), f"not a valid DiffX model card ({err})") from None
        for part in (self.card.vae, self.card.scheduler):
            if not (self.root / part).is_dir():
                raise DataError(str(self.root / part), "missing from the model folder")

    @property
    def vae(self) -> Path:
        return self.root / self.card.vae

    def schedule(self) -> dict[str, Any]:
        path = self.root / self.card.scheduler / SCHEDULER_CONFIG
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as err:
            raise DataError(str(path), f"cannot read the noise schedule ({err})") from None

    def files(self) -> list[Path]:
        """Every weight and config file, in a fixed order (the model digest hashes these)."""
        return sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors"))


WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def load_pretrained(model_class: Any, folder: str | Path, what: str) -> Any:
    """``model_class.from_pretrained(folder)`` with errors that name the file and say what was expected.

    diffusers reports a missing or cut-short weights file as a traceback from deep inside safetensors; a
    user needs to hear which folder is incomplete and which stage writes it.
    """
    from safetensors import SafetensorError

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise DataError(str(folder), f"no config.json; expected a {what} folder (save_pretrained output)")
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise DataError(str(weights), f"the {what} weights are missing (expected safetensors)")
    try:
        return model_class.from_pretrained(str(folder))
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        problem = f"the {what} files are unreadable, truncated or mismatched ({first[:200]})"
        raise DataError(str(folder), problem) from None
