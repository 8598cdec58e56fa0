"""The data path of the real suites, measured: decoding once vs reading the cache, batch time against a
torchvision DataLoader + ImageFolder pipeline, and host memory while streaming ever larger memory maps.

    python benchmarks/data_path.py [--work DIR] [--batches 60] [--sizes 5000,20000,40000]

1. Writes an Office-31-shaped data root of synthetic 256 px JPEGs (the real layout and counts:
   amazon 2,817 / dslr 498 / webcam 795 = 4,110 images, 31 class folders each).
2. Times the first decode into the cache against loading the cache again, and reports the
   cache's bytes per image.
3. Times the batches a training step reads, with the suites' augmentation (random resized
   crop to 224 px of 8-100% of the area + horizontal flip), at batch 32:
   - ours: `BatchStream` over the cached amazon split plus the batched crop on the device,
     with the network's input normalisation included;
   - torchvision: `DataLoader(ImageFolder(...))`, `Resize((256, 256))`, `RandomResizedCrop(224)`,
     `RandomHorizontalFlip()`, `ToTensor()`, `Normalize(ImageNet)`, with the machine's cores as
     workers, persistent, its first batches (worker start-up) not timed.
4. For each size in `--sizes`, writes a cache-format memory map of that many random 256 px
   images (a VisDA-sized stand-in, smaller) and streams `--batches` batches from it in a
   fresh process, reporting the peak anonymous memory (`RssAnon`) and the peak file-backed
   resident memory (`RssFile`, page cache the kernel may reclaim).

Prints Markdown tables; nothing is asserted (machines are noisy: compare the ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OFFICE31_COUNTS = {"amazon": 2817, "dslr": 498, "webcam": 795}
BATCH = 32


def write_office31(root: Path) -> None:
    """Synthetic 256 px JPEGs in the Office-31 layout: smooth colour fields with a class-dependent pattern."""
    from PIL import Image

    from cdkd_plugins.domains.office import OFFICE31_CLASSES

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256] / 256.0
    for domain, count in OFFICE31_COUNTS.items():
        for k in range(count):
            label = k % len(OFFICE31_CLASSES)
            folder = root / "office31" / domain / "images" / OFFICE31_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            phase = rng.uniform(0, 6.28, size=3)
            image = np.stack([np.sin((label + 1) * xx * 6 + phase[c]) * np.cos(yy * (c + 2) * 3) for c in range(3)], -1)
            image = ((image + 1) * 127.5 + rng.normal(0, 8, size=image.shape)).clip(0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / f"frame_{k:05d}.jpg", quality=90)


def decode_vs_cached(root: Path, cache: Path) -> dict[str, float]:
    from cdkd_bench.data import load_domain
    from cdkd_bench.plugins import load_host

    host = load_host()
    domains = [host.domains.get(f"office31.{d}") for d in OFFICE31_COUNTS]
    started = time.perf_counter()
    for domain in domains:
        load_domain(domain, 256, cache, root)
    first = time.perf_counter() - started
    started = time.perf_counter()
    total = 0
    for domain in domains:
        data = load_domain(domain, 256, cache, root)
        total += len(data.train_y) + len(data.test_y)
    again = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (cache / "data").rglob("images.npy"))
    return {"images": total, "first_decode_s": first, "cached_load_s": again, "bytes_per_image": size / total}


def our_batches(root: Path, cache: Path, batches: int) -> float:
    """Seconds per batch: gather from the cache, convert, crop and flip on the device, normalise as ResNet-50's weights expect."""
    import torch

    from cdkd_bench.augment import augmenter
    from cdkd_bench.data import BatchStream, Split, load_domain
    from cdkd_bench.images import Images
    from cdkd_bench.plugins import load_host

    torch.set_num_threads(1)
    host = load_host()
    suite = host.suite("office31")
    data = load_domain(host.domains.get("office31.amazon"), 256, cache, root)
    split = Split(Images([data.train_x], torch.device("cpu"), suite.input_size), data.train_y)
    stream = BatchStream(split, BATCH, 0)
    augment = augmenter(suite.teacher_augmentation, 0, suite.input_size)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    scale, shift = 0.5 / std, (0.5 - mean) / std  # what NormalisedInput does for a pretrained ResNet
    for _ in range(3):  # warm-up
        stream.next(plain=False)
        augment(stream.last_stored)
    started = time.perf_counter()
    for _ in range(batches):
        stream.next(plain=False)  # as the training loop asks when it augments
        x = augment(stream.last_stored)
        x = torch.addcmul(shift, x, scale)
    return (time.perf_counter() - started) / batches


def torchvision_batches(root: Path, batches: int, workers: int) -> float:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.set_num_threads(1)
    transform = transforms.Compose([
        transforms.Resize((256, 256)), transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    dataset = datasets.ImageFolder(str(root / "office31" / "amazon" / "images"), transform=transform)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                        drop_last=True)
    iterator = iter(loader)
    for _ in range(3):  # warm-up: workers started, first batches in flight
        next(iterator)
    started = time.perf_counter()
    done = 0
    while done < batches:
        try:
            next(iterator)
        except StopIteration:
            iterator = iter(loader)
            continue
        done += 1
    return (time.perf_counter() - started) / batches


def write_standin(path: Path, count: int) -> None:
    """A cache-format memory map of ``count`` 256 px images (VisDA's synthetic domain holds 152,397)."""
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, 3, 256, 256))
    block = np.random.default_rng(0).integers(0, 256, size=(256, 3, 256, 256), dtype=np.uint8)
    for start in range(0, count, len(block)):
        images[start : start + len(block)] = block[: count - start]
    images.flush()


STREAM_CHILD = """
import json, sys, numpy as np, torch
import cdkd_bench.images as images_module
from cdkd_bench.data import BatchStream, Split
from cdkd_bench.mapped import read_randomly
from cdkd_bench.images import Images
torch.set_num_threads(1)
images_module.RESIDENT_BYTES = 0  # stream, whatever the size
array = np.load(sys.argv[1], mmap_mode="c")
read_randomly(array)  # as the cache reader does
x = torch.from_numpy(array)
split = Split(Images([x], torch.device("cpu"), 224), torch.zeros(len(x), dtype=torch.long))
stream = BatchStream(split, 32, 0)
peak = {"RssAnon": 0, "RssFile": 0}
for _ in range(int(sys.argv[2])):
    stream.next()
    for line in open("/proc/self/status"):
        key = line.split(":")[0]
        if key in peak:
            peak[key] = max(peak[key], int(line.split()[1]))
print(json.dumps(peak))
"""


def stream_memory(path: Path, batches: int) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", STREAM_CHILD, str(path), str(batches)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="a folder for the data root and caches (default: a temporary one)")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (default: the cores)")
    parser.add_argument("--sizes", default="5000,20000,40000", help="images in each memory-map stand-in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        root, cache = work / "data", work / "cache"
        if not (root / "office31").is_dir():
            started = time.perf_counter()
            write_office31(root)
            print(f"wrote 4,110 synthetic JPEGs in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        decode = decode_vs_cached(root, cache)
        print("| images | first decode | cached load | ratio | cache bytes / image |\n|---:|---:|---:|---:|---:|")
        print(f"| {decode['images']:,} | {decode['first_decode_s']:.2f} s | {decode['cached_load_s']:.3f} s | "
              f"{decode['first_decode_s'] / decode['cached_load_s']:.0f}x | {decode['bytes_per_image']:,.0f} |")
        ours = our_batches(root, cache, args.batches)
        print(f"\n| pipeline (batch {BATCH}, 224 px crops) | seconds per batch | vs cdkd-bench |\n|---|---:|---:|")
        print(f"| cached uint8 + crops on the device (cdkd-bench, 1 thread) | {ours:.4f} | 1.0 |")
        for workers in sorted({0, args.workers}):
            theirs = torchvision_batches(root, args.batches, workers)
            print(f"| DataLoader + ImageFolder, {workers} workers | {theirs:.4f} | {theirs / ours:.1f}x slower |")
        print("\n| stand-in images | memory map size | peak RssAnon | peak RssFile |\n|---:|---:|---:|---:|")
        for count in (int(c) for c in args.sizes.split(",")):
            path = work / f"standin-{count}.npy"
            write_standin(path, count)
            peak = stream_memory(path, args.batches)
            print(f"| {count:,} | {path.stat().st_size / 2**30:.1f} GiB | {peak['RssAnon'] / 1024:.0f} MiB | "
                  f"{peak['RssFile'] / 1024:.0f} MiB |")
            path.unlink()


if __name__ == "__main__":
    main()
