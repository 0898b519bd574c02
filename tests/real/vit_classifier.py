"""A ViT image classifier fed HF-style dict batches (`pixel_values`), as an image processor yields.

Raw samples are uint8 HWC images; the transform returns `{"pixel_values": CHW float}`, the default
collate stacks them into a dict batch, and the model (`transformers.ViTForImageClassification` at
random init from a small config, no download) is called with keyword arguments and returns an
`ImageClassifierOutput`. The attention and MLP matmuls are the cost (compute bound).
"""

import torch
from transformers import ViTConfig, ViTForImageClassification

import accel

IMAGE_SIZE = 64
CONFIG = ViTConfig(
    image_size=IMAGE_SIZE,
    patch_size=8,
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=256,
    num_labels=10,
)


def make_images(count: int = 64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8, generator=g) for _ in range(count)]


def to_pixel_values(image: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"pixel_values": (image.permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5}


def build_model() -> ViTForImageClassification:
    torch.manual_seed(0)
    return ViTForImageClassification(CONFIG).eval()


def pipeline() -> accel.Pipeline:
    return accel.Pipeline(
        model=build_model(), source=make_images(), transform=to_pixel_values, batch_size=16, name="vit_classifier"
    )
