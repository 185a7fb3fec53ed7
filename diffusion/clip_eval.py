"""Opt-in CLIP evaluation (the seed report's): how a CLIP model rates samples against class prompts, free text
templates with `{digit}` (the class number) or `{name}` (its name): by default the report's three, "a photo of the
digit 7", "a blurry image of the digit 7" and "a clear handwritten 7".

Hand-written over transformers' `CLIPModel` forward: torchmetrics' `CLIPScore` calls `get_image_features`, which
returns an output object rather than a tensor from transformers 5 on (it fails there), and has no zero-shot
accuracy. Weights: a local folder written by `save_pretrained`, or a hub id when online; safetensors only.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import torch
from torch import Tensor

# The seed report's three prompts, as it writes them ("a photo of the digit 0", …: numerals)
PROMPTS = ("a photo of the digit {digit}", "a blurry image of the digit {digit}", "a clear handwritten {digit}")


@cache
def load_clip(name_or_path: str, device: str = "cpu") -> tuple[Any, Any]:
    """CLIP model and processor (loaded once per process); one clear error when transformers or the weights are
    missing."""
    try:
        from transformers import CLIPModel, CLIPProcessor
    except ImportError:
        raise ValueError("eval.clip needs transformers: pip install -e '.[clip]'") from None
    try:  # use_kernels=False: hub kernels are code fetched at run time (transformers 5 asks for them by default)
        model = CLIPModel.from_pretrained(name_or_path, use_safetensors=True, use_kernels=False).to(device).eval()
        processor = CLIPProcessor.from_pretrained(name_or_path)
    except OSError as err:
        reason = str(err).splitlines()[0]
        raise FileNotFoundError(f"CLIP weights {name_or_path!r} could not be loaded ({reason}); give a folder "
                                "written by save_pretrained (safetensors) or a hub id reachable online") from None
    except (ValueError, TypeError, ImportError) as err:  # a transformers release this project has not been tested with
        import transformers

        reason = str(err).splitlines()[0]
        raise ValueError(f"transformers {transformers.__version__} could not load the CLIP model ({reason}); install "
                         f"the tested version: pip install -c constraints.txt -e '.[clip]'") from None
    return model, processor


@torch.no_grad()
def clip_evaluate(images: Tensor, labels: Tensor, class_names: Sequence[str], model: Any, processor: Any,
                  prompts: Sequence[str] = PROMPTS, batch_size: int = 100) -> dict[str, Any]:
    """Per prompt template: the CLIP score 100·cos(image, prompt of its class) (Hessel et al. 2021, without the
    clipping at 0) overall and per class, zero-shot accuracy (the class whose prompt is closest), and its share in
    percent: CLIP's softmax over the templates of the image's class (logit scale × cosine, Radford et al. 2021),
    averaged, overall and per class (the seed report's "70.6% photo vs 28.6% blurry"); for the first two templates,
    per class, how often CLIP prefers the first ("photo") over the second ("blurry")."""
    k, device = len(class_names), next(model.parameters()).device
    texts = [p.format(name=n, digit=c) for p in prompts for c, n in enumerate(class_names)]  # (template, class)
    tokens = processor(text=texts, return_tensors="pt", padding=True).to(device)
    cos: list[Tensor] = []
    for x in images.split(batch_size):
        rgb = list(x.expand(-1, 3, -1, -1).cpu())  # grey repeated to RGB; the processor resizes and normalises
        pixels = processor(images=rgb, return_tensors="pt")["pixel_values"].to(device)
        out = model(pixel_values=pixels, **tokens)
        cos.append((out.image_embeds @ out.text_embeds.T).float().cpu())  # both unit vectors
    sim = torch.cat(cos).view(len(images), len(prompts), k)  # (N, template, class)
    own = sim[torch.arange(len(images)), :, labels]  # (N, template): each image against its own class
    share = 100 * torch.softmax(model.logit_scale.exp().float().cpu() * own, dim=1)  # (N, template), rows sum to 100
    result: dict[str, Any] = {"prompts": list(prompts), "num_samples": len(images)}
    for j, template in enumerate(prompts):
        result[template] = {
            "clip_score": 100 * own[:, j].mean().item(),
            "per_class_clip_score": [100 * own[labels == c, j].mean().item() for c in range(k)],
            "zero_shot_accuracy": (sim[:, j].argmax(1) == labels).float().mean().item(),
            "percent": share[:, j].mean().item(),
            "per_class_percent": [share[labels == c, j].mean().item() for c in range(k)],
        }
    if len(prompts) >= 2:
        first = (own[:, 0] > own[:, 1]).float()
        result["first_preferred"] = first.mean().item()
        result["per_class_first_preferred"] = [first[labels == c].mean().item() for c in range(k)]
    return result
