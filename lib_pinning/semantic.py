"""What an image shows, beyond its pixels: image embeddings (the semantic loss) and tag scores (pinning to tags).

An `Embedder` turns a batch of images into unit vectors (two images mean the same when their vectors point the
same way: the semantic distance of a pair is 1 − cosine) and scores images against tags (a higher score: the
tag fits better; the tag loss of an image is 1 − its mean score over the tags). Two kinds exist:

- `ClipEmbedder`: an OpenAI CLIP model (the `clip` package's), as the WebUI's "Interrogate CLIP" loads it. Images
  are resized and centre-cropped to its input size and normalised as CLIP was trained; a tag's score is the
  cosine of its text embedding and the image's. Batched on the model's device.
- `lib_pinning.embedded.PrototypeEmbedder`: the embedded model's exact semantics, in closed form.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# CLIP's input normalisation (openai/CLIP clip.py `_transform`).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Embedder:
    """Image embeddings and tag scores; `name` says in run.json what made them."""

    name = ""

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, D) unit vectors (float64 on the CPU)."""
        raise NotImplementedError

    def tag_scores(self, embeddings: torch.Tensor, tags: Sequence[str]) -> torch.Tensor:
        """N images' embeddings (from `embed_images`) and T tags -> (N, T) scores (float64 on the CPU): how well
        each tag fits."""
        raise NotImplementedError

    def check_tags(self, tags: Sequence[str]) -> None:
        """Raise an InputError for tags it cannot score (before anything renders)."""

    def release(self) -> None:
        """The run is over: give back what it holds (e.g. move a model off the GPU)."""


def semantic_distances(embeddings: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """1 − cosine of each pair of unit vectors: 0 for the same meaning, up to 2 for opposite ones."""
    if not len(pairs):
        return torch.zeros(0, dtype=torch.float64)
    index = torch.tensor(pairs, dtype=torch.int64)
    return (1 - (embeddings[index[:, 0]] * embeddings[index[:, 1]]).sum(1)).clamp(min=0.0)


class ClipEmbedder(Embedder):
    """A CLIP model (`encode_image`, `encode_text`, `visual.input_resolution`) with the tokenizer it came with."""

    def __init__(self, model, tokenize, name: str, device: torch.device | str | None = None):
        self.model = model.eval()
        self.tokenize = tokenize
        self.name = name
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.size = int(model.visual.input_resolution)
        self._text_cache: dict[str, torch.Tensor] = {}

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        """As CLIP's own transform: shorter side to its size (bicubic), centre crop, normalise."""
        images = images.to(self.device, torch.float32)
        height, width = images.shape[-2:]
        scale = self.size / min(height, width)
        shape = (max(self.size, int(height * scale)), max(self.size, int(width * scale)))  # torchvision's Resize
        resized = F.interpolate(images, size=shape, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (int(round((side - self.size) / 2)) for side in resized.shape[-2:])  # torchvision's CenterCrop
        cropped = resized[..., top:top + self.size, left:left + self.size]
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        return ((cropped - mean) / std).to(self.dtype)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        self.model.to(self.device)
        features = self.model.encode_image(self._pixels(images)).double()
        return F.normalize(features, dim=1).cpu()

    @torch.no_grad()
    def _text(self, tags: Sequence[str]) -> torch.Tensor:
        missing = [tag for tag in tags if tag not in self._text_cache]
        if missing:
            self.model.to(self.device)
            features = self.model.encode_text(self.tokenize(missing, truncate=True).to(self.device)).double()
            self._text_cache.update(zip(missing, F.normalize(features, dim=1).cpu()))
        return torch.stack([self._text_cache[tag] for tag in tags])

    def tag_scores(self, embeddings: torch.Tensor, tags: Sequence[str]) -> torch.Tensor:
        return embeddings @ self._text(tags).T

    def release(self) -> None:
        self.model.to("cpu")
