"""grownet.data: datasets, validation split, batched augmentation, loaders, errors."""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grownet.data import (
    KNOWN_DATASETS,
    Augment,
    Dataset,
    Loader,
    StreamLoader,
    batch_crop_flip,
    batch_cutout,
    channel_stats,
    load_dataset,
    make_loaders,
    split_validation,
)
import grownet.data._loader as loader_module
from grownet.data._augment import make_plan
from grownet.errors import ConfigError, DataError, UsageError

SHARED = Path(os.environ.get("GROWNET_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
CIFAR = SHARED / "cifar-10-batches-py"
needs_cifar = pytest.mark.skipif(not (CIFAR / "data_batch_1").is_file(), reason=f"shared CIFAR-10 not found at {CIFAR}")


def images(n: int = 40, c: int = 3, h: int = 6, w: int = 6, *, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def labels(n: int = 40, k: int = 4) -> torch.Tensor:
    return torch.arange(n, dtype=torch.int64) % k


def reference_crop_flip(x, idx, padding, dy, dx, flip):
    """Per-sample definition: window (dy, dx) of the zero-padded image, then torch.flip."""
    xp = F.pad(x, (padding,) * 4)
    h, w = x.shape[-2:]
    out = []
    for k, i in enumerate(idx.tolist()):
        win = xp[i, :, dy[k] : dy[k] + h, dx[k] : dx[k] + w]
        out.append(torch.flip(win, dims=[2]) if flip[k] else win)
    return torch.stack(out)


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


# ---- validation split ----------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_covering():
    tr, va = split_validation(1000, fraction=0.1, seed=3)
    tr2, va2 = split_validation(1000, fraction=0.1, seed=3)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert len(va) == 100 and len(tr) == 900
    assert torch.equal(torch.sort(torch.cat([tr, va])).values, torch.arange(1000))  # disjoint + covering
    assert torch.equal(tr, tr.sort().values) and torch.equal(va, va.sort().values)
    _, va_other = split_validation(1000, fraction=0.1, seed=4)
    assert not torch.equal(va, va_other)


def test_split_edge_sizes_and_errors():
    assert [len(t) for t in split_validation(5, fraction=0.01)] == [4, 1]  # at least one when fraction > 0
    assert [len(t) for t in split_validation(5, fraction=0.0)] == [5, 0]
    with pytest.raises(UsageError, match=r"val_fraction: must be a number in \[0, 1\), got 1.5"):
        split_validation(10, fraction=1.5)
    with pytest.raises(UsageError, match="n: must be a non-negative integer"):
        split_validation(-1)


# ---- batched augmentation --------------------------------------------------------------------


def test_crop_and_flip_equal_the_per_sample_definition():
    x = torch.arange(30 * 2 * 5 * 7, dtype=torch.int64).reshape(30, 2, 5, 7) % 251 + 1  # no zeros: padding shows
    x = x.to(torch.uint8)
    p = 2
    # every (dy, dx, flip) combination once
    grid = torch.cartesian_prod(torch.arange(2 * p + 1), torch.arange(2 * p + 1), torch.tensor([0, 1]))
    idx = torch.arange(len(grid)) % len(x)
    dy, dx, flip = grid[:, 0], grid[:, 1], grid[:, 2].bool()
    out = batch_crop_flip(x, idx, padding=p, dy=dy, dx=dx, flip=flip)
    assert torch.equal(out, reference_crop_flip(x, idx, p, dy, dx, flip))
    # offsets (0, 0): the top-left window, whose first `p` rows and columns are padding zeros
    k = int(((dy == 0) & (dx == 0) & ~flip).nonzero()[0])
    assert (out[k, :, :p, :] == 0).all() and (out[k, :, :, :p] == 0).all()
    assert torch.equal(out[k, :, p:, p:], x[idx[k], :, : 5 - p, : 7 - p])
    # offsets (p, p) is the identity window; flipped it is torch.flip
    k = int(((dy == p) & (dx == p) & flip).nonzero()[0])
    assert torch.equal(out[k], torch.flip(x[idx[k]], dims=[2]))


def test_flip_only_equals_torch_flip():
    x = images(12)
    flip = torch.tensor([True, False] * 6)
    out = batch_crop_flip(x, torch.arange(12), padding=0, dy=None, dx=None, flip=flip)
    assert torch.equal(out[flip], torch.flip(x[flip], dims=[3]))
    assert torch.equal(out[~flip], x[~flip])


def test_cutout_zeroes_a_clipped_square():
    x = torch.ones(2, 1, 8, 8)
    batch_cutout(x, 4, torch.tensor([4, 0]), torch.tensor([4, 7]))
    expected = torch.ones(2, 1, 8, 8)
    expected[0, :, 2:6, 2:6] = 0  # centred at (4, 4): rows/cols 4-2 .. 4+2
    expected[1, :, 0:2, 5:8] = 0  # centred at (0, 7): clipped at the top and right border
    assert torch.equal(x, expected)


def test_augment_rejects_bad_settings():
    with pytest.raises(ConfigError, match=r"augment.crop_padding: must be a non-negative integer, got -1"):
        Augment(crop_padding=-1)
    with pytest.raises(ConfigError, match=r"augment.flip: must be true or false"):
        Augment(flip="yes")  # type: ignore[arg-type]


# ---- the in-memory loader --------------------------------------------------------------------


def test_unaugmented_batches_are_normalised_images_in_order():
    x, y = images(10), labels(10)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    ld = Loader(x, y, batch_size=4, mean=mean, std=std, shuffle=False, augment=None)
    assert len(ld) == 3 and ld.num_samples == 10
    batches = list(ld)
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    got, got_y = collect(batches)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    assert got.dtype == torch.float32 and got_y.dtype == torch.int64
    assert torch.equal(got, (x.float() / 255 - m) / s)  # bit-identical to the formula
    assert torch.equal(got_y, y)
    assert len(Loader(x, y, batch_size=4, mean=mean, std=std, shuffle=False, augment=None, drop_last=True)) == 2


@pytest.mark.parametrize("small_chunks", [False, True])
def test_augmented_batches_follow_the_epoch_plan(monkeypatch, small_chunks):
    """Sample k of epoch e is image order[k], cropped/flipped with the plan's k-th draws,
    whatever the chunks the loader augments and normalises at once."""
    if small_chunks:
        monkeypatch.setattr(loader_module, "_CHUNK_BYTES", 3 * 8 * (3 * 14 * 14))  # 3 batches of padded images
        monkeypatch.setattr(loader_module, "_SLAB_SAMPLES", 16)  # 2 batches
    x, y = images(37, h=8, w=8), labels(37)
    aug = Augment(crop_padding=3, flip=True, cutout=3)
    ld = Loader(x, y, batch_size=8, mean=(0, 0, 0), std=(1, 1, 1), shuffle=True, augment=aug, seed=5)
    ld.set_epoch(2)
    got, got_y = collect(ld)
    plan = make_plan(37, height=8, width=8, seed=5, epoch=2, shuffle=True, augment=aug)
    expected = reference_crop_flip(x, plan.order, 3, plan.dy, plan.dx, plan.flip).float()
    expected = batch_cutout(expected, 3, plan.cut_y, plan.cut_x)
    assert torch.equal((got * 255).round(), expected)  # mean 0, std 1: x / 255
    assert torch.equal(got_y, y[plan.order])
    assert sorted(plan.order.tolist()) == list(range(37))


def test_augmented_values_stay_in_the_normalised_pixel_range():
    x, y = images(64, h=8, w=8), labels(64)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    ld = Loader(x, y, batch_size=16, mean=mean, std=std, shuffle=True, augment=Augment(crop_padding=2, cutout=3))
    got, _ = collect(ld)
    assert got.shape == (64, 3, 8, 8)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    pixels = got * s + m  # back to [0, 1] units: a multiple of 1/255, or exactly the mean (cutout)
    on_grid = ((pixels * 255 - (pixels * 255).round()).abs() < 1e-3) | ((got == 0).all(dim=1, keepdim=True))
    assert on_grid.all()
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert (got == 0).all(dim=1).any()  # some cutout pixels (mean colour) exist


def test_same_seed_and_epoch_give_the_same_batches():
    x, y = images(50), labels(50)
    kw = dict(batch_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True, augment=Augment(crop_padding=2, cutout=2), seed=7)
    a, b = Loader(x, y, **kw), Loader(x, y, **kw)
    epochs_a = [collect(a) for _ in range(3)]  # epochs 0, 1, 2 without set_epoch
    b.set_epoch(2)  # a resumed run starting at epoch 2
    xb, yb = collect(b)
    assert torch.equal(xb, epochs_a[2][0]) and torch.equal(yb, epochs_a[2][1])
    assert not torch.equal(epochs_a[0][1], epochs_a[1][1])  # a new order every epoch
    other = Loader(x, y, **{**kw, "seed": 8})
    other.set_epoch(2)
    assert not torch.equal(collect(other)[1], yb)


def test_channels_last_output():
    x, y = images(8), labels(8)
    ld = Loader(x, y, batch_size=4, mean=(0.5,) * 3, std=(0.5,) * 3, shuffle=False, augment=Augment(), channels_last=True)
    plain = Loader(x, y, batch_size=4, mean=(0.5,) * 3, std=(0.5,) * 3, shuffle=False, augment=Augment())
    for (xa, _), (xb, _) in zip(ld, plain):
        assert xa.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(xa, xb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_batches_equal_cpu_batches():
    x, y = images(40), labels(40)
    kw = dict(batch_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True, augment=Augment(cutout=2), seed=1)
    xc, yc = collect(Loader(x, y, **kw))
    xg, yg = collect(Loader(x, y, device="cuda", **kw))
    assert xg.device.type == "cuda"
    torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-6)
    assert torch.equal(yg.cpu(), yc)


def test_loader_rejects_bad_arguments():
    x, y = images(4), labels(4)
    with pytest.raises(UsageError, match="x_uint8: must be a uint8 tensor"):
        Loader(x.float(), y, batch_size=2, mean=(0,) * 3, std=(1,) * 3, shuffle=False, augment=None)
    with pytest.raises(UsageError, match="batch_size: must be a positive integer, got 0"):
        Loader(x, y, batch_size=0, mean=(0,) * 3, std=(1,) * 3, shuffle=False, augment=None)
    with pytest.raises(UsageError, match="need 3 values each"):
        Loader(x, y, batch_size=2, mean=(0,), std=(1,), shuffle=False, augment=None)


# ---- make_loaders and the DataLoader fallback --------------------------------------------------


def small_dataset(n_train: int = 60, n_test: int = 20) -> Dataset:
    x, xt = images(n_train, seed=1), images(n_test, seed=2)
    mean, std = channel_stats(x)
    return Dataset("toy", x, labels(n_train), xt, labels(n_test), ["a", "b", "c", "d"], mean, std)


def test_make_loaders_holds_out_validation_from_train():
    ds = small_dataset()
    train, val, test = make_loaders(ds, batch_size=8, val_fraction=0.25, seed=2)
    tr_idx, va_idx = split_validation(60, fraction=0.25, seed=2)
    assert (train.num_samples, val.num_samples, test.num_samples) == (45, 15, 20)
    assert len(train) == 45 // 8  # the partial last training batch is dropped
    m, s = torch.tensor(ds.mean).view(1, 3, 1, 1), torch.tensor(ds.std).view(1, 3, 1, 1)
    xv, yv = collect(val)  # unaugmented slice of the TRAIN set, stored order
    assert torch.equal(xv, (ds.x_train[va_idx].float() / 255 - m) / s)
    assert torch.equal(yv, ds.y_train[va_idx])
    xt, _ = collect(test)
    assert torch.equal(xt, (ds.x_test.float() / 255 - m) / s)
    _, ytr = collect(train)
    assert set(ytr.tolist()) <= set(ds.y_train[tr_idx].tolist())


def test_no_validation_split_gives_an_empty_validation_loader():
    ds = small_dataset()
    train, val, _ = make_loaders(ds, batch_size=8, val_fraction=0.0)
    assert (train.num_samples, val.num_samples, len(val), list(val)) == (60, 0, 0, [])


def test_dataloader_fallback_yields_the_same_batches():
    ds = small_dataset()
    kw = dict(batch_size=8, val_fraction=0.2, seed=3, augment=Augment(cutout=2))
    mem = make_loaders(ds, **kw)
    streamed = make_loaders(ds, max_memory_bytes=0, **kw)
    assert all(isinstance(ld, StreamLoader) for ld in streamed) and all(isinstance(ld, Loader) for ld in mem)
    for a, b in zip(mem, streamed):
        assert len(a) == len(b)
        for epoch in (0, 4):
            a.set_epoch(epoch)
            b.set_epoch(epoch)
            for (xa, ya), (xb, yb) in zip(a, b, strict=True):
                assert xa.shape == xb.shape and xa.dtype == xb.dtype == torch.float32
                assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ---- dataset formats ---------------------------------------------------------------------------


@needs_cifar
def test_shared_cifar_folder_is_accepted_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="grownet.data"):
        ds = load_dataset("cifar10", data_dir=SHARED, limit_train=300, limit_test=50)
    assert ds.x_train.shape == (300, 3, 32, 32) and ds.x_train.dtype == torch.uint8
    assert ds.x_test.shape == (50, 3, 32, 32) and ds.y_train.dtype == torch.int64
    assert ds.classes[:2] == ["airplane", "automobile"] and ds.num_classes == 10
    assert ds.in_channels == 3 and ds.image_size == 32
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "differs from the official archive" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    # mean/std are the statistics of what was kept
    m = ds.x_train.double().mean(dim=(0, 2, 3)) / 255
    assert np.allclose(ds.mean, m.numpy(), atol=1e-9)
    # data_dir may be the folder itself; a smaller limit is a leading slice of a larger one
    small = load_dataset("CIFAR10", data_dir=CIFAR, limit_train=100, limit_test=10)
    assert torch.equal(small.x_train, ds.x_train[:100]) and torch.equal(small.y_test, ds.y_test[:10])


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", ["uint8", "float"])
def test_npz_layouts_and_dtypes(tmp_path, layout, dtype):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (12, 3, 5, 5), dtype=np.uint8)  # NCHW reference
    x_test = rng.integers(0, 256, (4, 3, 5, 5), dtype=np.uint8)
    store = {"x_train": x_train, "x_test": x_test}
    if layout == "nhwc":
        store = {k: v.transpose(0, 2, 3, 1) for k, v in store.items()}
    if dtype == "float":
        store = {k: v.astype(np.float32) / 255 for k, v in store.items()}
    path = tmp_path / "d.npz"
    np.savez(path, **store, y_train=np.arange(12) % 3, y_test=np.array([0, 1, 2, 1]))
    ds = load_dataset(f"npz:{path}")
    assert torch.equal(ds.x_train, torch.from_numpy(x_train)) and torch.equal(ds.x_test, torch.from_numpy(x_test))
    assert ds.classes == ["0", "1", "2"] and ds.y_train.dtype == torch.int64
    limited = load_dataset(f"npz:{path}", limit_train=5, image_size=3)
    assert limited.x_train.shape == (5, 3, 3, 3) and torch.equal(limited.y_train, ds.y_train[:5])


def write_png(path: Path, size: tuple[int, int], color, mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_image_folder_is_read_and_resized(tmp_path):
    write_png(tmp_path / "train" / "cat" / "a.png", (10, 12), (255, 0, 0))
    write_png(tmp_path / "train" / "cat" / "b.png", (8, 8), (250, 0, 0))
    write_png(tmp_path / "train" / "dog" / "sub" / "c.png", (20, 20), (0, 0, 255))
    write_png(tmp_path / "val" / "dog" / "d.png", (6, 6), (0, 0, 200))
    ds = load_dataset(f"folder:{tmp_path}", image_size=4)
    assert ds.classes == ["cat", "dog"]
    assert ds.x_train.shape == (3, 3, 4, 4) and ds.x_test.shape == (1, 3, 4, 4)
    assert ds.y_train.tolist() == [0, 1, 0]  # round-robin over classes
    assert ds.x_train[0, :, 0, 0].tolist() == [255, 0, 0] and ds.x_test[0, :, 0, 0].tolist() == [0, 0, 200]
    assert load_dataset(f"folder:{tmp_path}", image_size=4, limit_train=2).y_train.tolist() == [0, 1]


def test_grayscale_image_folder_has_one_channel(tmp_path):
    for split, cls, v in (("train", "a", 10), ("train", "b", 200), ("test", "a", 30)):
        write_png(tmp_path / split / cls / "x.png", (5, 5), v, mode="L")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.x_train.shape == (2, 1, 5, 5) and ds.image_size == 5
    assert ds.x_train[:, 0, 0, 0].tolist() == [10, 200]


# ---- errors ------------------------------------------------------------------------------------


def test_unknown_dataset_lists_the_known_ones():
    assert "cifar10" in KNOWN_DATASETS
    with pytest.raises(DataError, match=r"unknown dataset 'imagenet7'; known: cifar10, cifar100, svhn, mnist, fashion-mnist, folder:PATH, npz:PATH"):
        load_dataset("imagenet7")


def test_missing_data_without_download_names_the_folder_and_the_flag(tmp_path):
    with pytest.raises(DataError, match=rf"cifar10: no data found in {tmp_path}/cifar-10-batches-py or {tmp_path} \(downloads are off\); pass --data-dir DIR where DIR holds cifar-10-batches-py/"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_failed_download_is_a_clean_data_error(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(DataError, match=rf"mnist: no data found in {tmp_path}/MNIST/raw.* the download failed \(.*\); pass --data-dir") as info:
        load_dataset("mnist", data_dir=tmp_path, download=True)
    assert "\n" not in str(info.value)


def fake_cifar(root: Path, batch1: bytes) -> Path:
    """A cifar-10-batches-py folder whose data_batch_1 holds ``batch1`` (a real meta file)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    (folder / "data_batch_1").write_bytes(batch1)
    return folder


@needs_cifar
def test_truncated_cifar_file(tmp_path):
    fake_cifar(tmp_path, (CIFAR / "data_batch_1").read_bytes()[:5000])
    with pytest.raises(DataError, match=r"cifar10: cannot read .*data_batch_1, truncated or corrupt \(.*\); replace it"):
        load_dataset("cifar10", data_dir=tmp_path, limit_train=10)


def test_cifar_wrong_shape_and_labels(tmp_path):
    bad_shape = {"data": np.zeros((4, 3000), np.uint8), "labels": [0, 1, 2, 3]}
    fake_cifar(tmp_path / "a", pickle.dumps(bad_shape))
    with pytest.raises(DataError, match=r"'data' must be uint8 of shape \(N, 3072\), got uint8 \(4, 3000\)"):
        load_dataset("cifar10", data_dir=tmp_path / "a", limit_train=4)
    bad_labels = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 12, 3]}
    fake_cifar(tmp_path / "b", pickle.dumps(bad_labels))
    with pytest.raises(DataError, match=r"label 12 out of range; labels must be in \[0, 10\)"):
        load_dataset("cifar10", data_dir=tmp_path / "b", limit_train=4)
    short = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3]}
    fake_cifar(tmp_path / "c", pickle.dumps(short))
    with pytest.raises(DataError, match=r"holds 4 images, the official file holds 10000"):
        load_dataset("cifar10", data_dir=tmp_path / "c", limit_train=4)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    fake_cifar(tmp_path, pickle.dumps({"data": shutil.rmtree}))
    with pytest.raises(DataError, match=r"truncated or corrupt \(UnpicklingError: unexpected object shutil.rmtree"):
        load_dataset("cifar10", data_dir=tmp_path, limit_train=4)


def test_truncated_idx_file(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100)
    with pytest.raises(DataError, match=r"mnist: .*train-images-idx3-ubyte is truncated or corrupt"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_npz_errors(tmp_path):
    ok = dict(x_train=np.zeros((4, 5, 5, 3), np.uint8), y_train=np.arange(4), x_test=np.zeros((2, 5, 5, 3), np.uint8), y_test=np.arange(2))
    np.savez(tmp_path / "shape.npz", **{**ok, "x_train": np.zeros((4, 5, 5, 7), np.uint8)})
    with pytest.raises(DataError, match=r"x_train has shape \(4, 5, 5, 7\); expected \(N, H, W, C\) or \(N, C, H, W\)"):
        load_dataset(f"npz:{tmp_path / 'shape.npz'}")
    np.savez(tmp_path / "labels.npz", **{**ok, "y_test": np.array([0, 9])})
    with pytest.raises(DataError, match=r"y_test: label 9 out of range; labels must be in \[0, 4\)"):
        load_dataset(f"npz:{tmp_path / 'labels.npz'}")
    np.savez(tmp_path / "missing.npz", x_train=ok["x_train"], y_train=ok["y_train"])
    with pytest.raises(DataError, match=r"lacks x_test, y_test \(has: x_train, y_train\)"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    np.savez(tmp_path / "full.npz", **ok)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "full.npz").read_bytes()[:300])
    with pytest.raises(DataError, match=r"cannot read .*cut.npz, truncated or corrupt"):
        load_dataset(f"npz:{tmp_path / 'cut.npz'}")
    np.savez(tmp_path / "neg.npz", **{**ok, "x_train": -np.ones((4, 5, 5, 3), np.float32)})
    with pytest.raises(DataError, match=r"float images must be in \[0, 1\] or \[0, 255\]"):
        load_dataset(f"npz:{tmp_path / 'neg.npz'}")


def test_empty_image_folder(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match=r"class folder .*train/cat holds no images"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "train" / "cat").rmdir()
    with pytest.raises(DataError, match=rf"no images found in {tmp_path}/train \(expected .*/train/<class>/<image>"):
        load_dataset(f"folder:{tmp_path}")


def test_corrupt_image_and_mixed_sizes(tmp_path):
    write_png(tmp_path / "train" / "a" / "x.png", (4, 4), (1, 2, 3))
    write_png(tmp_path / "test" / "a" / "y.png", (6, 6), (1, 2, 3))
    with pytest.raises(DataError, match=r"images are not squares of one size .*; pass image_size"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "train" / "a" / "z.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*z.png, truncated or corrupt"):
        load_dataset(f"folder:{tmp_path}", image_size=4)


def test_dataset_checks_its_arrays():
    x = images(4)
    with pytest.raises(DataError, match=r"toy: y_train: label 7 out of range; labels must be in \[0, 4\)"):
        Dataset("toy", x, torch.tensor([0, 1, 2, 7]), x, labels(4), list("abcd"), (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(DataError, match=r"toy: x_test must be a uint8 tensor \(N, C, H, W\), got torch.float32"):
        Dataset("toy", x, labels(4), x.float(), labels(4), list("abcd"), (0.5,) * 3, (0.2,) * 3)


def test_limits_must_be_positive():
    with pytest.raises(UsageError, match=r"limit_train: must be a positive integer or None, got 0"):
        load_dataset("cifar10", limit_train=0)


def test_channel_stats_are_population_mean_and_std():
    x = images(30, c=2, h=3, w=3)
    mean, std = channel_stats(x)
    xf = x.double() / 255
    assert np.allclose(mean, xf.mean(dim=(0, 2, 3)).numpy(), atol=1e-12)
    assert np.allclose(std, xf.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-12)
    assert channel_stats(torch.full((2, 1, 2, 2), 7, dtype=torch.uint8)) == ((7 / 255,), (1.0,))  # flat channel: std 1


def test_svhn_mat_with_the_wrong_shape(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    (tmp_path / "svhn").mkdir()
    x = np.zeros((32, 32, 3, 5), np.uint8)
    scipy_io.savemat(tmp_path / "svhn" / "train_32x32.mat", {"X": x, "y": np.ones((5, 1), np.uint8)})
    with pytest.raises(DataError, match=r"svhn: .*train_32x32.mat: 'X' must be uint8 of shape \(32, 32, 3, 73257\), got uint8"):
        load_dataset("svhn", data_dir=tmp_path, download=False)


def test_test_class_without_training_images(tmp_path):
    write_png(tmp_path / "train" / "a" / "x.png", (4, 4), (1, 2, 3))
    write_png(tmp_path / "test" / "b" / "y.png", (4, 4), (1, 2, 3))
    with pytest.raises(DataError, match=r"test/b is a class with no folder in .*train; every test class needs training"):
        load_dataset(f"folder:{tmp_path}")


# ---- extreme labels, sizes and names (issue 18) --------------------------------------------------------


def small_npz(path: Path, **change) -> str:
    arrays = dict(x_train=np.zeros((4, 5, 5, 3), np.uint8), y_train=np.arange(4), x_test=np.zeros((2, 5, 5, 3), np.uint8),
                  y_test=np.arange(2))
    np.savez(path, **{**arrays, **change})
    return f"npz:{path}"


@pytest.mark.parametrize("y, shown", [
    (np.array([0, 1, 2, 2**40]), "1099511627776"),           # would build a list of 2**40 class names
    (np.array([0, 1, 2, 2**64 - 1], np.uint64), "18446744073709551615"),  # would wrap to -1 in int64
    (np.array([0, 1, 2, 1e300]), "1e+300"),                  # would overflow the int64 cast
    (np.array([0, 1, 2, 1_000_000]), "1000000"),             # one past the largest class index
])
def test_labels_past_a_million_classes_are_refused_before_the_class_list(tmp_path, y, shown):
    with pytest.raises(DataError, match=rf"y_train: label {re.escape(shown)} is too large; labels are class indices below 1,000,000"):
        load_dataset(small_npz(tmp_path / "d.npz", y_train=y))


def test_the_largest_class_index_is_accepted(tmp_path):
    ds = load_dataset(small_npz(tmp_path / "d.npz", y_train=np.array([0, 1, 2, 999_999])))
    assert ds.num_classes == 1_000_000 and ds.classes[-1] == "999999"


@pytest.mark.parametrize("key", ["x_train", "y_train"])
@pytest.mark.parametrize("dtype", ["m8[s]", "M8[s]", "c8", "U2"])
def test_time_complex_and_text_arrays_are_refused_by_dtype(tmp_path, key, dtype):
    shape = (4, 5, 5, 3) if key == "x_train" else (4,)
    with pytest.raises(DataError, match=rf"{key} has dtype"):
        load_dataset(small_npz(tmp_path / "d.npz", **{key: np.zeros(shape, dtype)}))


def test_negative_float_labels_are_refused_before_the_cast(tmp_path):
    with pytest.raises(DataError, match=r"y_test: label -1e\+30 is negative"):
        load_dataset(small_npz(tmp_path / "d.npz", y_test=np.array([0, -1e30])))
    with pytest.raises(DataError, match=r"y_test: label -1e\+300 is negative"):
        load_dataset(small_npz(tmp_path / "d.npz", y_test=np.array([0, -1e300])))


def test_an_npz_array_larger_than_the_machine_is_refused_from_its_header(tmp_path):
    import io
    import zipfile

    header = io.BytesIO()  # a header promising 512 TiB, with no data: a compressed archive can expand that far
    np.lib.format.write_array_header_2_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**20, 2**20, 64)})
    small_npz(tmp_path / "small.npz")
    with zipfile.ZipFile(tmp_path / "small.npz") as src, zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
        for name in src.namelist():
            z.writestr(name, header.getvalue() if name == "x_test.npy" else src.read(name))
    with pytest.raises(DataError, match=r"x_test is a 1048576x1048576x64 float64 array of 524,288\.0 GiB, more than half"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")


def test_class_names_that_are_not_utf8_are_refused(tmp_path):
    bad = b"c\xffat".decode("utf-8", "surrogateescape")
    with pytest.raises(DataError, match=r"classes\[1\]: 'c\\udcffat' is not valid UTF-8"):
        load_dataset(small_npz(tmp_path / "d.npz", classes=np.array(["a", bad, "c", "d"])))
    for split in ("train", "test"):
        write_png(tmp_path / "imgs" / split / bad / "x.png", (4, 4), (1, 2, 3))
    with pytest.raises(DataError, match=r"class folder .*/train: '\S*c\\udcffat' is not valid UTF-8|class folder .*'c\\udcffat'"):
        load_dataset(f"folder:{tmp_path / 'imgs'}")


def test_image_file_names_that_are_not_utf8_are_refused(tmp_path):
    write_png(tmp_path / "train" / "cat" / b"\xff.png".decode("utf-8", "surrogateescape"), (4, 4), (1, 2, 3))
    write_png(tmp_path / "test" / "cat" / "y.png", (4, 4), (1, 2, 3))
    with pytest.raises(DataError, match=r"image file: '.*/train/cat/\\udcff\.png' is not valid UTF-8"):
        load_dataset(f"folder:{tmp_path}")


def test_a_dataset_name_that_is_not_utf8_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"^dataset: 'npz:.*\\udcff\.npz' is not valid UTF-8"):
        load_dataset(f"npz:{tmp_path}/\udcff.npz")


def test_a_data_folder_variable_that_is_not_utf8_is_refused(monkeypatch):
    monkeypatch.setenv("GROWNET_DATA", os.fsdecode(b"/data/\xff"))
    with pytest.raises(DataError, match=r"^GROWNET_DATA: '/data/\\udcff' is not valid UTF-8"):
        load_dataset("cifar10", download=False)
