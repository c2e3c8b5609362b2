"""A built-in, procedural image classification dataset (no download, deterministic).

``shapes_dataset(n, seed)`` draws 32×32 RGB images of ten shape classes at random position,
size, rotation and colours, on a noisy gradient background with a distracting blob: a task a
small CNN learns to a high but not perfect accuracy in a minute or two on a CPU, so that
accuracy losses from compression are visible.

``load_image_folder(folder, size)`` reads a user's images as calibration batches (Pillow).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

CLASSES = ("disk", "square", "triangle", "ring", "cross", "stripes", "checker", "ellipse",
           "frame", "two dots")


def _masks(label: torch.Tensor, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor,
           period: torch.Tensor) -> torch.Tensor:
    """[n, H, W] boolean shape masks in each sample's rotated coordinates (u, v)."""
    d = torch.sqrt(u * u + v * v)
    box = torch.maximum(u.abs(), v.abs())
    sqrt3 = math.sqrt(3.0)
    shapes = torch.stack([
        d < r,                                                          # disk
        box < 0.8 * r,                                                  # square
        (v > -0.5 * r) & (v < r - sqrt3 * u.abs()),                     # triangle
        (d < r) & (d > 0.55 * r),                                       # ring
        ((u.abs() < 0.28 * r) & (v.abs() < r)) | ((v.abs() < 0.28 * r) & (u.abs() < r)),
        (d < r) & (torch.sin(u * 2 * math.pi / period) > 0),            # stripes
        (box < 0.8 * r) & (torch.sin(u * 2 * math.pi / period) *
                           torch.sin(v * 2 * math.pi / period) > 0),    # checker
        (u / r) ** 2 + (v / (0.45 * r)) ** 2 < 1,                       # ellipse
        (box < 0.85 * r) & (box > 0.55 * r),                            # frame
        ((u - 0.5 * r) ** 2 + v ** 2 < (0.32 * r) ** 2)
        | ((u + 0.5 * r) ** 2 + v ** 2 < (0.32 * r) ** 2),              # two dots
    ], dim=1)  # [n, classes, H, W]
    return shapes[torch.arange(label.numel()), label]


def shapes_dataset(n: int, seed: int = 0, size: int = 32,
                   noise: float = 0.1) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (float32 [n, 3, size, size], roughly zero mean, unit variance) and labels
    (int64 [n], 0..9, balanced). The same (n, seed) always gives the same data."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    label = torch.arange(n) % len(CLASSES)
    label = label[torch.randperm(n, generator=g)]
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    r = (0.18 + 0.16 * rand(n)) * size
    cx = size / 2 + (rand(n) - 0.5) * (size - 2 * r) * 0.8
    cy = size / 2 + (rand(n) - 0.5) * (size - 2 * r) * 0.8
    angle = rand(n) * 2 * math.pi
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    period = (3.0 + 2.0 * rand(n))[:, None, None]
    mask = _masks(label, u, v, r[:, None, None], period).float()

    # background: a random colour gradient; foreground: a random colour far enough from it
    bg0, bg1 = rand(n, 3), rand(n, 3)
    ramp = (torch.cos(angle * 3)[:, None, None] * (x - size / 2)
            + torch.sin(angle * 3)[:, None, None] * (y - size / 2)) / size + 0.5
    background = bg0[:, :, None, None] + (bg1 - bg0)[:, :, None, None] * ramp[:, None]
    fg = rand(n, 3)
    fg = torch.where((fg - bg0).abs().sum(dim=1, keepdim=True) < 0.6, 1 - fg, fg)
    image = background * (1 - mask[:, None]) + fg[:, :, None, None] * mask[:, None]
    # a distracting blob at a random place
    bx, by = rand(n) * size, rand(n) * size
    blob = torch.exp(-((x - bx[:, None, None]) ** 2 + (y - by[:, None, None]) ** 2)
                     / (2 * (1.5 + 2 * rand(n))[:, None, None] ** 2))
    image = image + 0.5 * (rand(n, 3) - 0.5)[:, :, None, None] * blob[:, None]
    image = image + noise * torch.randn(image.shape, generator=g)
    return ((image - 0.5) / 0.35).float().contiguous(), label


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif",
                    ".tiff")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_image_folder(folder, size: Tuple[int, int, int], limit: int = 256,
                      mean: Optional[Sequence[float]] = None,
                      std: Optional[Sequence[float]] = None, batch: int = 32) -> List[torch.Tensor]:
    """Calibration batches from the images under ``folder`` (searched recursively, so an
    ImageFolder tree with one sub-folder per class works), in sorted path order, at most
    ``limit`` of them.

    Each image is converted to RGB (grayscale when ``size[0] == 1``), its shorter side resized to
    ``H / 0.875`` (256 for 224, the usual ImageNet evaluation transform), centre-cropped to
    ``size = (C, H, W)``, scaled to [0, 1] and normalized with ``mean`` and ``std`` (one value per
    channel; ImageNet's by default for 3 channels, none otherwise). Returns float32 tensors
    ``[≤ batch, C, H, W]``. Needs Pillow (``pip install pillow``)."""
    from pathlib import Path

    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading an image folder needs Pillow: pip install pillow") from None
    c, h, w = size
    if c not in (1, 3):
        raise ValueError(f"images give 1 or 3 channels, the model takes {c}")
    if mean is None and std is None and c == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    mean = torch.tensor(mean if mean is not None else [0.0] * c, dtype=torch.float32)
    std = torch.tensor(std if std is not None else [1.0] * c, dtype=torch.float32)
    if mean.numel() != c or std.numel() != c or not bool((std > 0).all()):
        raise ValueError(f"mean and std need {c} values each, std positive")
    mean, std = mean.view(c, 1, 1), std.view(c, 1, 1)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and p.is_file())[:limit]
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    images = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img = img.convert("L" if c == 1 else "RGB")
                scale = max(h, w) / 0.875 / min(img.size)
                img = img.resize((max(w, round(img.width * scale)),
                                  max(h, round(img.height * scale))), Image.BILINEAR)
                left, top = (img.width - w) // 2, (img.height - h) // 2
                img = img.crop((left, top, left + w, top + h))
                data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        except OSError as err:
            raise ValueError(f"cannot read image {path}: {err}") from None
        x = data.view(h, w, c).permute(2, 0, 1).float() / 255
        images.append((x - mean) / std)
    stacked = torch.stack(images)
    return [stacked[i:i + batch] for i in range(0, len(stacked), batch)]
