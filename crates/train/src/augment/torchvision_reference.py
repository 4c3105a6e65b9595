"""Reference outputs of torchvision's augmentation ops for `tests_torchvision.rs`.

Writes `torchvision_reference.json` beside this file: fixed 8-bit images, torchvision's output
of each op at fixed parameters on the float path (`uint8 / 255` as float32 tensors, as protoclr
converts them), the same op on the PIL path (what `torchvision.datasets.CIFAR10` + `transforms`
on PIL images compute, requantised to 8 bits after every op) for comparison, and summary
statistics of `RandomResizedCrop.get_params` on a 32x32 image. The Rust test needs no torch.

Run (CPU wheels from PyPI; any recent torch/torchvision):
    python3 -m venv .venv && .venv/bin/pip install torch torchvision
    .venv/bin/python crates/train/src/augment/torchvision_reference.py
"""

import json
import math
import os

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def lcg_image(seed, c, h, w):
    """A 3xHxW uint8 image from a 64-bit LCG (Knuth's MMIX constants), top byte."""
    x = seed
    out = []
    for _ in range(c * h * w):
        x = (6364136223846793005 * x + 1442695040888963407) % (1 << 64)
        out.append(x >> 56)
    return np.array(out, dtype=np.uint8).reshape(c, h, w)


def edge_image():
    """6x6 with grey pixels (max == min), pure primaries, hue-sector boundaries, 0 and 255."""
    img = lcg_image(7, 3, 6, 6)
    specials = [
        (0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 0, 0), (0, 255, 0), (0, 0, 255),
        (255, 255, 0), (0, 255, 255), (255, 0, 255), (200, 100, 100), (100, 200, 100),
        (100, 100, 200), (10, 10, 250), (250, 250, 10), (1, 0, 0), (254, 255, 255),
    ]
    for k, rgb in enumerate(specials):
        y, x = divmod(k, 6)
        img[:, y, x] = rgb
    return img


def to_float(u8):
    return torch.from_numpy(u8.astype(np.float32) / np.float32(255.0))


def pil_op(u8, fn):
    """The op on the PIL image, back to [0, 1] floats."""
    pil = Image.fromarray(np.ascontiguousarray(u8.transpose(1, 2, 0)), "RGB")
    out = np.asarray(fn(pil), dtype=np.float32) / 255.0
    return torch.from_numpy(out.transpose(2, 0, 1).copy())


def flat(t):
    """Float32 values with 9 significant digits: enough to round-trip an f32 exactly."""
    return [float("%.9g" % v) for v in t.reshape(-1).tolist()]


def view_stats(v):
    """Summary of one view (3xHxW floats in [0, 1]); the same as `view_stats` in the Rust test."""
    v = v.double()
    sat = (v.max(0).values - v.min(0).values)
    return [float(v[0].mean()), float(v[1].mean()), float(v[2].mean()), float(v.std(unbiased=False)),
            float(sat.mean()), float(sat.max() == 0)]


def main():
    torch.set_num_threads(1)
    images = {"a": lcg_image(1, 3, 6, 6), "edge": edge_image(), "c": lcg_image(3, 3, 12, 10)}
    colour = []
    for name in ["a", "edge"]:
        u8 = images[name]
        x = to_float(u8)
        cases = []
        for f in [0.6, 1.4]:
            cases.append(("brightness", f, F.adjust_brightness))
        for f in [0.0, 0.6, 1.4]:
            cases.append(("contrast", f, F.adjust_contrast))
        for f in [0.0, 0.6, 1.4]:
            cases.append(("saturation", f, F.adjust_saturation))
        for f in [-0.5, -0.1, 0.1, 0.45]:
            cases.append(("hue", f, F.adjust_hue))
        for op, f, fn in cases:
            ref = fn(x, f)
            pil = pil_op(u8, lambda p: fn(p, f))
            colour.append({
                "image": name, "op": op, "factor": f, "out": flat(ref),
                "pil_minus_float_max_abs": float((pil - ref).abs().max()),
                "pil_minus_float_mean": float((pil - ref).mean()),
            })
        g = F.rgb_to_grayscale(x, num_output_channels=3)
        pil = pil_op(u8, lambda p: F.rgb_to_grayscale(p, num_output_channels=3))
        colour.append({"image": name, "op": "grayscale", "factor": 0.0, "out": flat(g),
                       "pil_minus_float_max_abs": float((pil - g).abs().max()),
                       "pil_minus_float_mean": float((pil - g).mean())})
        colour.append({"image": name, "op": "hflip", "factor": 0.0, "out": flat(F.hflip(x)),
                       "pil_minus_float_max_abs": 0.0, "pil_minus_float_mean": 0.0})

    crops = []
    u8 = images["c"]
    x = to_float(u8)
    for top, left, h, w, size in [(1, 2, 7, 5, 12), (0, 0, 12, 10, 4), (2, 1, 9, 9, 9),
                                  (3, 3, 4, 6, 8), (0, 0, 12, 10, 16), (5, 0, 7, 10, 5)]:
        ref = F.resized_crop(x, top, left, h, w, [size, size],
                             interpolation=T.InterpolationMode.BILINEAR, antialias=True)
        pil = pil_op(u8, lambda p: F.resized_crop(
            p, top, left, h, w, [size, size], interpolation=T.InterpolationMode.BILINEAR,
            antialias=True))
        crops.append({"top": top, "left": left, "h": h, "w": w, "size": size, "out": flat(ref),
                      "pil_minus_float_max_abs": float((pil - ref).abs().max())})

    # RandomResizedCrop.get_params on 32x32, the simclr defaults.
    torch.manual_seed(0)
    n = 200_000
    scale, ratio = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)
    dummy = torch.empty(3, 32, 32)
    hs = np.zeros(33, dtype=np.int64)
    ws = np.zeros(33, dtype=np.int64)
    area, logr, pos = [], [], []
    for _ in range(n):
        i, j, h, w = T.RandomResizedCrop.get_params(dummy, scale, ratio)
        hs[h] += 1
        ws[w] += 1
        area.append(h * w / 1024.0)
        logr.append(math.log(w / h))
        pos.append((i + 0.5) / (32 - h + 1))
    area, logr, pos = np.array(area), np.array(logr), np.array(pos)
    crop_stats = {
        "n": n, "scale": scale, "ratio": ratio,
        "h_counts": hs[1:].tolist(), "w_counts": ws[1:].tolist(),
        "area_mean": float(area.mean()), "area_std": float(area.std()),
        "log_ratio_mean": float(logr.mean()), "log_ratio_std": float(logr.std()),
        "top_position_mean": float(pos.mean()),
    }

    # The whole simclr pipeline (protoclr's defaults) in distribution: summary statistics of
    # many views of fixed 32x32 images, on the float path and on the PIL path.
    torch.manual_seed(1)
    pipe_images = [lcg_image(10 + k, 3, 32, 32) for k in range(2)]
    views_per_image = 5000
    geometric = [T.RandomResizedCrop(32, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                                     interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                 T.RandomHorizontalFlip(0.5)]
    colour_t = [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(0.2)]
    float_pipe = T.Compose(geometric + colour_t)
    pil_pipe = T.Compose(geometric + colour_t + [T.PILToTensor()])
    pipeline = {"images": [im.reshape(-1).tolist() for im in pipe_images],
                "views_per_image": views_per_image}
    for path, run in [("float", lambda u8: float_pipe(to_float(u8))),
                      ("pil", lambda u8: pil_pipe(Image.fromarray(
                          np.ascontiguousarray(u8.transpose(1, 2, 0)), "RGB")).float() / 255.0)]:
        stats = []
        for u8 in pipe_images:
            rows = []
            for _ in range(views_per_image):
                v = run(u8)
                rows.append(view_stats(v))
            rows = np.array(rows, dtype=np.float64)
            stats.append({"mean": rows.mean(0).tolist(), "std": rows.std(0).tolist()})
        pipeline[path] = stats

    out = {
        "about": "torchvision reference outputs for crates/train/src/augment/tests_torchvision.rs; "
                 "made by torchvision_reference.py",
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "images": {k: v.reshape(-1).tolist() for k, v in images.items()},
        "shapes": {k: list(v.shape) for k, v in images.items()},
        "colour": colour, "crops": crops, "crop_params": crop_stats,
        "pipeline_stats": ["mean R", "mean G", "mean B", "pixel std", "mean max-min (saturation)",
                           "grey view"],
        "pipeline": pipeline,
    }
    path = os.path.join(HERE, "torchvision_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
