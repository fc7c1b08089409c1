"""A CLIP file as OpenAI ships them (a TorchScript archive that `clip.load(path, jit=False)` rebuilds), small and
with random weights: the offline WebUI tests load it as the WebUI's Interrogate CLIP model."""

from pathlib import Path

import torch

TINY = dict(embed_dim=32, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
            context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1)


def save_clip_archive(path: Path, seed: int = 0, **sizes) -> Path:
    """A random-weight `clip.model.CLIP` of `sizes` (default TINY) traced and saved at `path`."""
    import clip

    sizes = {**TINY, **sizes}
    with torch.random.fork_rng(devices=[]):  # the module's own init draws from the global generator
        torch.manual_seed(seed)
        model = clip.model.CLIP(**sizes).eval()
    for name in ("context_length", "vocab_size"):  # OpenAI's archives carry these as buffers
        delattr(model, name)
    for name, value in (("input_resolution", sizes["image_resolution"]), ("context_length", 77),
                        ("vocab_size", sizes["vocab_size"])):
        model.register_buffer(name, torch.tensor(value))
    image = torch.zeros(1, 3, sizes["image_resolution"], sizes["image_resolution"])
    tokens = clip.tokenize(["a"])
    with torch.no_grad():
        traced = torch.jit.trace_module(model, {"forward": (image, tokens), "encode_image": (image,),
                                                "encode_text": (tokens,)}, check_trace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path
