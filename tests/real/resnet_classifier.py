"""A ResNet image classifier over a stream of decoded images, as a transformers user writes it.

Raw samples are uint8 HWC images; the transform scales and normalizes them to CHW float, the
default collate stacks them, and the model (`transformers.ResNetForImageClassification` at random
init from a small config, no download) is called with the pixel batch positionally and returns an
`ImageClassifierOutputWithNoAttention`. The convolutions are the cost (compute bound).
"""

import torch
from transformers import ResNetConfig, ResNetForImageClassification

import accel

IMAGE_SIZE = 64
CONFIG = ResNetConfig(
    embedding_size=32,
    hidden_sizes=[32, 64, 128, 256],
    depths=[1, 1, 1, 1],
    layer_type="basic",
    num_labels=10,
)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def make_images(count: int = 64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8, generator=g) for _ in range(count)]


def to_pixels(image: torch.Tensor) -> torch.Tensor:
    return (image.permute(2, 0, 1).float() / 255.0 - MEAN) / STD


def build_model() -> ResNetForImageClassification:
    torch.manual_seed(0)
    return ResNetForImageClassification(CONFIG).eval()


def pipeline() -> accel.Pipeline:
    return accel.Pipeline(
        model=build_model(), source=make_images(), transform=to_pixels, batch_size=16, name="resnet_classifier"
    )
