"""PyTorch reference for `protoclr bench step|infer` (crates/train/src/bench.rs).

Replicates, in plain eager PyTorch on the CPU, what protoclr's benchmark measures:

* Model (crates/train/src/model.rs): ResNet-18 in the CIFAR layout — 3×3 stem convolution
  (stride 1, padding 1, no bias), batch norm, ReLU, no max-pool; four stages of two BasicBlocks
  at widths w, 2w, 4w, 8w, stride 2 in the first block of stages 2–4, 1×1 convolution + batch
  norm on the shortcut where the shape changes; global average pooling. Projection head
  Linear(8w, 512, no bias) – BatchNorm1d – ReLU – Linear(512, 128). Initialisation and
  in-place ReLUs as torchvision (Kaiming-normal fan-out convolutions, γ = 1, β = 0, default
  linear layers); default NCHW memory format, eager mode, as a user would run it.
* Loss (crates/train/src/loss.rs, `ntxent` = `balanced` with α = λ = 1): cosine-similarity
  matrix of the 2N L2-normalised projections divided by τ = 0.5, diagonal masked, cross-entropy
  to the positive (i + N) mod 2N, mean over the 2N anchors.
* Optimiser (crates/train/src/optim.rs): SGD, lr 0.01, momentum 0.9, weight decay 5e-4 on
  convolution and linear weights only (batch-norm parameters and biases excluded, as protoclr's
  default `exclude_bn_bias: true`).
* Step: 2·batch random 32×32 views (uniform in [−2, 2)), timed per phase — forward including
  the loss, backward, optimiser (step + zero_grad) — median over `--steps` steps after `--warmup`
  untimed ones; images_per_sec = 2·batch / step time.
* Inference: eval-mode encoder only under torch.inference_mode, one batch of `--batch` images,
  images_per_sec = batch / median time.
* Peak RSS: resource.getrusage(RUSAGE_SELF).ru_maxrss (KiB on Linux) in MB, like protoclr's
  VmHWM. It includes what `import torch` alone holds (reported as import_rss_mb, about 0.6 GB
  with the PyPI wheel, part of it CUDA libraries that wheel loads even on a CPU-only machine).

Prints one JSON line with the keys of `protoclr bench … --json` and "framework": "pytorch",
which `protoclr bench table` pairs with protoclr's line of the same kind, model, width and batch.
"""

import argparse
import json
import resource
import time
import warnings

# The PyPI wheel warns at import when NumPy is absent; nothing here needs NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# What importing the (CUDA-enabled PyPI) wheel alone costs, before any model exists.
IMPORT_RSS_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

TAU = 0.5
LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
PROJ_HIDDEN = 512
PROJ_DIM = 128
MASK = -1e9


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.down is None else self.down(x)
        return self.relu(out + short)


class ResNet18Cifar(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        blocks, cin = [], width
        for stage in range(4):
            planes = width << stage
            for i in range(2):
                blocks.append(BasicBlock(cin, planes, 2 if stage > 0 and i == 0 else 1))
                cin = planes
        self.blocks = nn.Sequential(*blocks)
        self.feat_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        h = self.blocks(self.relu(self.stem_bn(self.stem(x))))
        return torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)


class SimClr(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.encoder = ResNet18Cifar(width)
        self.projector = nn.Sequential(
            nn.Linear(self.encoder.feat_dim, PROJ_HIDDEN, bias=False),
            nn.BatchNorm1d(PROJ_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(PROJ_HIDDEN, PROJ_DIM),
        )

    def forward(self, x):
        return self.projector(self.encoder(x))


def ntxent(z: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """NT-Xent over 2N views: rows 0..N are first views, N..2N second views."""
    two_n = z.shape[0]
    n = two_n // 2
    zn = F.normalize(z, dim=1)
    sim = zn @ zn.t() / tau
    eye = torch.eye(two_n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, MASK)
    target = (torch.arange(two_n, device=z.device) + n) % two_n
    return F.cross_entropy(sim, target)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    """SGD with weight decay on conv/linear weights only (protoclr's exclude_bn_bias)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=LR, momentum=MOMENTUM)


def median(v):
    """Same convention as bench.rs: the element at len/2 of the sorted list."""
    return sorted(v)[len(v) // 2]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def random_images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g) * 4.0 - 2.0


def bench_step(width: int, batch: int, steps: int, warmup: int) -> dict:
    model = SimClr(width).train()
    opt = sgd(model)
    x = random_images(2 * batch, 1)
    fw, bw, op, tot = [], [], [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = ntxent(model(x))
        loss.item()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        del loss
        if i >= warmup:
            fw.append((t1 - t0) * 1e3)
            bw.append((t2 - t1) * 1e3)
            op.append((t3 - t2) * 1e3)
            tot.append((t3 - t0) * 1e3)
    step_ms = median(tot)
    return {
        "images_per_sec": 2.0 * batch / (step_ms / 1e3),
        "forward_ms": median(fw),
        "backward_ms": median(bw),
        "optimizer_ms": median(op),
        "step_ms": step_ms,
    }


def bench_infer(width: int, batch: int, steps: int, warmup: int) -> dict:
    encoder = SimClr(width).encoder.eval()
    x = random_images(batch, 2)
    tot = []
    with torch.inference_mode():
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            encoder(x).sum().item()
            if i >= warmup:
                tot.append(time.perf_counter() - t0)
    return {"images_per_sec": batch / median(tot)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=["step", "infer"], default="step")
    ap.add_argument("--model", choices=["resnet18"], default="resnet18")
    ap.add_argument("--width", type=int, default=16, help="first-stage width (64: full ResNet-18)")
    ap.add_argument("--batch", type=int, default=None, help="images (default 128 for step, 512 for infer)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2 for step, 1 for infer)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    batch = args.batch or (128 if args.kind == "step" else 512)
    warmup = args.warmup if args.warmup is not None else (2 if args.kind == "step" else 1)

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)

    run = bench_step if args.kind == "step" else bench_infer
    result = run(args.width, batch, args.steps, warmup)
    out = {
        "framework": "pytorch",
        "kind": args.kind,
        "model": args.model,
        "width": args.width,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "ops": "eager",
        **result,
        "peak_rss_mb": peak_rss_mb(),
        "import_rss_mb": IMPORT_RSS_MB,
        "torch_version": torch.__version__,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
