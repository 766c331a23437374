"""grownet's in-memory CIFAR-10 training iterator against torchvision's DataLoader.

Measured on the project's 2-core Xeon @ 2.5 GHz (torch 2.13 CPU), quiet machine (load
average 0.4-1.4), 2026-11-21:

- torch's default 2 intra-op threads, two runs: grownet 175,272 vs torchvision 3,823
  images/s (45.8x) and 44.4x; small-VGG epoch on 10,000 images 5.68 s vs 10.45 s (1.84x),
  1.84x again in the second run.
- ``--threads 1``: 28.0x images/s, epoch 0.96x (11.1 s vs 10.7 s): with one training thread
  torchvision's two workers find the second core idle, so the loader costs training nothing.
- CPU per image (1 thread): grownet's iterator 0.011 ms, torchvision's pipeline 0.40 ms, the
  small-VGG SGD step 0.99 ms.
- Earlier runs while other jobs held the cores (load 4-7) spread over 7.6-20.6x and
  1.25-3.8x: two OpenMP threads stall whenever a neighbour holds a core.

On a lent NVIDIA H200 (16 cores, torch 2.11.0+cu130, 2 intra-op threads, nothing else
running), 2026-11-26, ``--device cuda --workers 8 --epoch-images 50000``: grownet 1,468,701
vs torchvision 21,206 images/s (69.3x; grownet's first pass 241,594, warming up), small-VGG
epoch over all 50,000 images 1.16 s vs 2.57 s (2.21x): eight workers cannot feed the GPU.

Baseline (the usual CIFAR recipe): ``torchvision.datasets.CIFAR10`` +
``DataLoader(batch_size=128, shuffle=True, num_workers=2)`` with ``RandomCrop(32, padding=4)``,
``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``. grownet: :class:`grownet.data.Loader`
with ``Augment(crop_padding=4, flip=True)``, batch 128, same normalisation.

Measured: (1) images per second of one full epoch of each iterator over the 50,000 training
images (a torchvision epoch includes starting its workers, as every epoch does without
persistent workers); (2) CPU milliseconds per image of each pipeline and of the training
step, in-process (what a loader takes from training when they share cores; little disturbed
by other processes); (3) seconds for one training epoch of a small VGG (widths
16-32-64-128, conv-BN-ReLU, max-pool between stages, global average pool, linear; SGD) fed
by each, on the first ``--epoch-images`` training images. Runs alternate between the two
loaders and the best of ``--repeats`` is kept, because this machine is shared.

How much faster the epoch gets depends on whether torchvision's workers find an idle core:
with torch's default threads the training uses both cores and the workers take CPU from it
(the figures above); with ``--threads 1`` on an otherwise idle machine they would run on the
spare core, and the CPU figures predict epochs of about equal length.

On CUDA (``--device cuda``) grownet's loader keeps the data on the GPU and augments there;
torchvision's batches are pinned and copied with ``non_blocking``, both nets train on the GPU,
and the CPU-per-image figures (a CPU-sharing question) are skipped.

Run: ``python benchmarks/data_throughput.py [--data ../shared/data] [--threads N] [--device cuda]
[--workers N]``; the last line reads ``data: 24.1x images/s, epoch 1.52x faster``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from _machine import machine  # benchmarks/ is sys.path[0] when run as a script

from grownet.arch import Architecture
from grownet.data import Augment, Loader, import_torchvision, load_dataset
from grownet.models import build_model

BATCH = 128
WORKERS = 2

def torchvision_cifar(root: Path, mean: tuple[float, ...], std: tuple[float, ...]):
    """torchvision's CIFAR10 with its per-sample PIL transform pipeline.

    The shared copy's batch files differ in md5 from the official archive (see
    shared/data/README.md), so CIFAR10's constructor would refuse them: the subclass skips
    only the md5 comparison (``_check_integrity`` -> True, and ``_load_meta`` reads the class
    names without the md5 check); loading, ``__getitem__`` (uint8 array -> PIL image ->
    transforms) and everything the DataLoader does are torchvision's own code.
    """
    tv = import_torchvision()
    T = tv.transforms

    class UncheckedCIFAR10(tv.datasets.CIFAR10):
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as fh:
                self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    return UncheckedCIFAR10(str(root), train=True, download=False, transform=transform)

def torchvision_loader(dataset, workers: int = WORKERS, device: str = "cpu") -> torch.utils.data.DataLoader:
    """The usual recipe's DataLoader; on CUDA with pinned batches (copied with ``non_blocking``)."""
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                                       pin_memory=device != "cpu")

def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize(device)

def iterate(loader, device: str = "cpu") -> tuple[int, float]:
    """Images and seconds for one pass over ``loader``, each batch on ``device`` when it is counted."""
    _sync(device)
    start = time.perf_counter()
    n = 0
    for x, _ in loader:
        x = x.to(device, non_blocking=True)
        n += len(x)
    _sync(device)
    return n, time.perf_counter() - start

def small_vgg() -> torch.nn.Module:
    torch.manual_seed(0)
    stages = ((16,), (32,), (64,), (128,))
    return build_model(Architecture(family="vgg", stages=stages, in_channels=3, input_size=32, num_classes=10))

def train_epoch(loader, *, warmup: int = 0, device: str = "cpu") -> float:
    """Seconds for one SGD epoch of a fresh small VGG on ``device`` over ``loader`` (after
    ``warmup`` untimed steps on a fixed batch, so both runs start with warm kernels)."""
    model = small_vgg().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    xw = torch.randn(BATCH, 3, 32, 32, device=device)
    yw = torch.randint(0, 10, (BATCH,), device=device)
    for _ in range(warmup):
        F.cross_entropy(model(xw), yw).backward()
    opt.zero_grad(set_to_none=True)
    _sync(device)
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - start

def cpu_costs(ds, tv_train, loader_factory, n: int) -> tuple[float, float, float]:
    """CPU milliseconds per image of: grownet's iterator, the torchvision pipeline run
    in-process (``num_workers=0``), and a small-VGG SGD step, all on one thread (two OpenMP
    threads would add their spin-waiting). CPU time is what a loader takes from training
    when both share the cores, and it is far less disturbed by other processes than wall
    time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _cpu_costs(ds, tv_train, loader_factory, n)
    finally:
        torch.set_num_threads(threads)

def _cpu_costs(ds, tv_train, loader_factory, n: int) -> tuple[float, float, float]:
    ours = loader_factory(ds.x_train[:n], ds.y_train[:n])
    start = time.process_time()
    iterate(ours)
    ours_ms = (time.process_time() - start) / n * 1e3
    tv = torch.utils.data.DataLoader(torch.utils.data.Subset(tv_train, range(n)), batch_size=BATCH, shuffle=True)
    start = time.process_time()
    iterate(tv)
    tv_ms = (time.process_time() - start) / n * 1e3
    start = time.process_time()
    train_epoch(ours, warmup=2)
    train_ms = (time.process_time() - start) / n * 1e3
    return ours_ms, tv_ms, train_ms

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data", help="folder holding cifar-10-batches-py"
    )
    parser.add_argument("--epoch-images", type=int, default=10000, help="training images in the timed VGG epoch")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per measurement; the best is kept")
    parser.add_argument(
        "--threads", type=int, default=0,
        help="torch intra-op threads of the training process (default: torch's choice)",
    )
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda[:N]: where grownet's loader keeps the data and both nets train")
    parser.add_argument("--workers", type=int, default=WORKERS, help="torchvision DataLoader worker processes")
    args = parser.parse_args(argv)
    dev, workers = args.device, args.workers
    if dev != "cpu" and not torch.cuda.is_available():
        parser.error(f"--device {dev}: CUDA is not available here; use --device cpu")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(machine(), flush=True)

    ds = load_dataset("cifar10", data_dir=args.data)
    tv_train = torchvision_cifar(Path(ds.source).parent, ds.mean, ds.std)
    aug = Augment(crop_padding=4, flip=True)

    def ours(x, y, seed=0):
        return Loader(x, y, batch_size=BATCH, mean=ds.mean, std=ds.std, shuffle=True, augment=aug, seed=seed,
                      device=dev)

    # 1. iterator throughput, one full epoch of 50,000 images each
    full = ours(ds.x_train, ds.y_train)
    best_ours = best_tv = float("inf")
    for r in range(args.repeats):
        full.set_epoch(r)
        n, t = iterate(full, dev)
        best_ours = min(best_ours, t)
        n_tv, t_tv = iterate(torchvision_loader(tv_train, workers, dev), dev)
        best_tv = min(best_tv, t_tv)
        print(f"  iterator run {r + 1}: grownet {n / t:,.0f}, torchvision {n_tv / t_tv:,.0f} images/s", flush=True)
    ours_ips, tv_ips = n / best_ours, n_tv / best_tv
    print(
        f"iterator, {n:,} images, batch {BATCH}, on {dev}: grownet {ours_ips:,.0f} images/s, "
        f"torchvision (DataLoader, {workers} workers{', pinned' if dev != 'cpu' else ''}) {tv_ips:,.0f} images/s"
    )
    if dev == "cpu":  # CPU time taken from a training that shares the cores (on a GPU the step is not CPU work)
        ours_ms, tv_ms, train_ms = cpu_costs(ds, tv_train, ours, 2560)
        print(
            f"CPU per image: grownet iterator {ours_ms:.3f} ms, torchvision pipeline {tv_ms:.3f} ms, small-VGG SGD step "
            f"{train_ms:.3f} ms (1 thread); an epoch costs {(train_ms + tv_ms) / (train_ms + ours_ms):.2f}x the CPU "
            "time with torchvision"
        )

    # 2. one small-VGG training epoch fed by each (a subset keeps the benchmark short)
    m = min(args.epoch_images, len(ds.x_train))
    sub = ours(ds.x_train[:m], ds.y_train[:m])
    tv_sub = torch.utils.data.Subset(tv_train, range(m))
    best_e_ours = best_e_tv = float("inf")
    for r in range(args.repeats):
        sub.set_epoch(r)
        e_ours = train_epoch(sub, warmup=3, device=dev)
        e_tv = train_epoch(torchvision_loader(tv_sub, workers, dev), warmup=3, device=dev)
        best_e_ours, best_e_tv = min(best_e_ours, e_ours), min(best_e_tv, e_tv)
        print(f"  epoch run {r + 1}: grownet {e_ours:.2f} s, torchvision {e_tv:.2f} s", flush=True)
    print(
        f"small-VGG (16-32-64-128) SGD epoch on the first {m:,} training images (a subset, to keep this short), "
        f"batch {BATCH}, on {dev}, {torch.get_num_threads()} intra-op threads: grownet {best_e_ours:.2f} s, "
        f"torchvision {best_e_tv:.2f} s"
    )
    print(f"data: {ours_ips / tv_ips:.1f}x images/s, epoch {best_e_tv / best_e_ours:.2f}x faster")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
