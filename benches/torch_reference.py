"""PyTorch reference for `protoclr bench step|infer` (crates/train/src/bench.rs).

Replicates, in PyTorch on the CPU, what protoclr's benchmark measures:

* Model (crates/train/src/model.rs): ResNet-18 in the CIFAR layout — 3×3 stem convolution
  (stride 1, padding 1, no bias), batch norm, ReLU, no max-pool; four stages of two BasicBlocks
  at widths w, 2w, 4w, 8w, stride 2 in the first block of stages 2–4, 1×1 convolution + batch
  norm on the shortcut where the shape changes; global average pooling. Projection head
  Linear(8w, 512, no bias) – BatchNorm1d – ReLU – Linear(512, 128). Initialisation and
  in-place ReLUs as torchvision (Kaiming-normal fan-out convolutions, γ = 1, β = 0, default
  linear layers).
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
  With `--compile`, inductor's compile workers are separate processes (idle once compiled) and
  are not counted.

Variants (what a PyTorch user who cares about CPU speed changes; the default is plain eager
NCHW f32, as a user would first run it):

* `--memory-format channels_last`: model (`model.to(memory_format=torch.channels_last)`) and
  input images in NHWC, so oneDNN's convolutions need no layout reorders.
* `--autocast bf16`: `torch.autocast("cpu", dtype=torch.bfloat16)` around forward + loss (the
  autocast contract: backward and the optimiser outside it; weights, gradients and optimiser
  state stay f32 master copies; autocast runs convolutions and matmuls in bf16 and keeps
  normalisation, softmax and the cross-entropy in f32). Inference: around the encoder's forward.
  Skipped where the CPU has no native bf16 (on x86: AVX-512 BF16 or AMX; emulated bf16 is
  slower than f32).
* `--compile`: `torch.compile` (inductor, default mode) of the forward + loss function — model
  and NT-Xent in one graph; AOTAutograd derives the compiled backward graph that
  `loss.backward()` runs. `loss.backward()` itself cannot sit inside a compiled function without
  a graph break, so this is the whole step a user can compile, apart from the optimiser: SGD
  stays eager (PyTorch's foreach implementation; under 1 % of the step here). Inference
  compiles the eval-mode encoder with inductor's `freezing` on (weights folded as constants,
  batch norm folded into the convolutions), as PyTorch's CPU inference guidance recommends,
  and runs it under torch.no_grad (freezing's documented context). Compilation happens in the
  warm-up steps: after `--warmup` steps, warm-up goes on until one whole step triggers no
  compilation (dynamo frames, AOTAutograd graphs, inductor graph compiles or cache loads; at
  most 10 more), so compile time and any recompilation stay out of the timed steps;
  `compiles_while_timed` in the output counts any that still happened (0 in an honest run).

A variant that cannot run here (no native bf16, a compile error) prints one JSON line with
"skipped": "why" instead of timings and exits 0, so benches/run.sh goes on.

Prints one JSON line with the keys of `protoclr bench … --json` and "framework": "pytorch",
"variant" (eager, channels_last, channels_last+bf16, compile+channels_last, …), "memory_format",
"autocast", "compile" and "precision" (f32, or bf16 under autocast), which `protoclr bench table`
uses to put each variant in its own column next to protoclr's line of the same kind, model,
width and batch.
"""

import argparse
import contextlib
import json
import platform
import resource
import sys
import time
import traceback
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


class Variant:
    """One PyTorch configuration: memory format, autocast and compilation."""

    def __init__(self, memory_format: str, autocast: str, compile_: bool):
        self.memory_format = memory_format
        self.autocast = autocast
        self.compile = compile_

    @property
    def label(self) -> str:
        parts = (["compile"] if self.compile else []) + (
            ["channels_last"] if self.memory_format == "channels_last" else []
        )
        if self.autocast == "bf16":
            parts.append("bf16")
        return "+".join(parts) or "eager"

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast == "bf16" else "f32"

    def keys(self) -> dict:
        return {
            "variant": self.label,
            "memory_format": self.memory_format,
            "autocast": self.autocast,
            "compile": self.compile,
            "precision": self.precision,
        }

    def layout(self, t):
        """A model (in place) or an input tensor in this variant's memory format."""
        if self.memory_format == "channels_last":
            return t.to(memory_format=torch.channels_last)
        return t

    def autocast_ctx(self):
        if self.autocast == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def unsupported(self):
        """Why this variant cannot run on this machine, or None."""
        if self.autocast == "bf16" and not native_bf16():
            return "no native bf16 on this CPU (x86: AVX-512 BF16 or AMX; elsewhere: oneDNN's bf16)"
        return None


def native_bf16() -> bool:
    """Whether this CPU computes bf16 products natively. On x86 oneDNN also "supports" bf16 on
    plain AVX-512 by converting to f32, slower than f32 itself, which is no column to compare
    against (protoclr's bf16 needs AVX-512 BF16 likewise)."""
    if platform.machine() in ("x86_64", "AMD64"):
        cpu = torch.cpu
        return cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported()
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def compile_events() -> int:
    """Compilations so far in this process: dynamo frames converted, AOTAutograd graphs built,
    inductor graphs compiled or loaded from its cache (the backward graph compiles lazily, on
    the first backward). Constant from one step to the next once nothing recompiles."""
    from torch._dynamo.utils import counters

    return (
        counters["frames"]["total"]
        + counters["aot_autograd"]["total"]
        + counters["inductor"]["fxgraph_cache_miss"]
        + counters["inductor"]["fxgraph_cache_hit"]
    )


MAX_EXTRA_WARMUP = 10


def timed_loop(one_step, steps: int, warmup: int, compiled: bool):
    """Runs `warmup` untimed steps (more while a step still compiles, when `compiled`), then
    `steps` timed ones; `one_step()` returns its phase times in ms. Returns the timed phase
    lists, the warm-up steps run and the compilations during the timed steps."""
    done, quiet = 0, not compiled
    while done < warmup or (not quiet and done < warmup + MAX_EXTRA_WARMUP):
        before = compile_events() if compiled else 0
        one_step()
        done += 1
        quiet = not compiled or compile_events() == before
    start = compile_events() if compiled else 0
    timed = [one_step() for _ in range(steps)]
    while_timed = (compile_events() - start) if compiled else 0
    return timed, done, while_timed


def bench_step(width: int, batch: int, steps: int, warmup: int, v: Variant) -> dict:
    model = v.layout(SimClr(width).train())
    opt = sgd(model)
    x = v.layout(random_images(2 * batch, 1))

    def forward_loss(x):
        with v.autocast_ctx():
            return ntxent(model(x))

    fwd = torch.compile(forward_loss) if v.compile else forward_loss

    def one_step():
        t0 = time.perf_counter()
        loss = fwd(x)
        loss.item()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        del loss
        return [(t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t3 - t0) * 1e3]

    timed, warm, while_timed = timed_loop(one_step, steps, warmup, v.compile)
    fw, bw, op, tot = (list(c) for c in zip(*timed))
    step_ms = median(tot)
    return {
        "images_per_sec": 2.0 * batch / (step_ms / 1e3),
        "forward_ms": median(fw),
        "backward_ms": median(bw),
        "optimizer_ms": median(op),
        "step_ms": step_ms,
        "warmup_steps": warm,
        "compiles_while_timed": while_timed,
    }


def bench_infer(width: int, batch: int, steps: int, warmup: int, v: Variant) -> dict:
    encoder = v.layout(SimClr(width).encoder.eval())
    x = v.layout(random_images(batch, 2))
    if v.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        run = torch.compile(encoder)
        grad_ctx = torch.no_grad
    else:
        run = encoder
        grad_ctx = torch.inference_mode

    def one_step():
        with grad_ctx(), v.autocast_ctx():
            t0 = time.perf_counter()
            run(x).float().sum().item()
            return [time.perf_counter() - t0]

    timed, warm, while_timed = timed_loop(one_step, steps, warmup, v.compile)
    return {
        "images_per_sec": batch / median([t[0] for t in timed]),
        "warmup_steps": warm,
        "compiles_while_timed": while_timed,
    }


def one_line_reason(e: BaseException) -> str:
    """The exception's type and first line of its message, short enough for a table."""
    msg = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__
    return text[:300]


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
    ap.add_argument(
        "--memory-format",
        choices=["contiguous", "channels_last"],
        default="contiguous",
        help="model and inputs in NCHW (contiguous) or NHWC (channels_last)",
    )
    ap.add_argument(
        "--autocast",
        choices=["none", "bf16"],
        default="none",
        help="torch.autocast('cpu', bfloat16) around forward + loss (weights and optimiser f32)",
    )
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward + loss (inductor)")
    args = ap.parse_args()
    batch = args.batch or (128 if args.kind == "step" else 512)
    warmup = args.warmup if args.warmup is not None else (2 if args.kind == "step" else 1)
    v = Variant(args.memory_format, args.autocast, args.compile)

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)

    out = {
        "framework": "pytorch",
        "kind": args.kind,
        "model": args.model,
        "width": args.width,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "ops": "inductor" if v.compile else "eager",
        **v.keys(),
    }
    why = v.unsupported()
    if why is None:
        run = bench_step if args.kind == "step" else bench_infer
        try:
            out.update(run(args.width, batch, args.steps, warmup, v))
        except Exception as e:  # noqa: BLE001 — any failure of a variant is reported, not fatal
            if not (v.compile or v.autocast != "none" or v.memory_format != "contiguous"):
                raise  # plain eager failing is a bug in this script, not a skipped variant
            traceback.print_exc(file=sys.stderr)
            why = one_line_reason(e)
    if why is not None:
        out["skipped"] = why
        print(f"torch_reference.py: {v.label} skipped: {why}", file=sys.stderr)
    else:
        out["peak_rss_mb"] = peak_rss_mb()
        out["import_rss_mb"] = IMPORT_RSS_MB
    out["torch_version"] = torch.__version__
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
