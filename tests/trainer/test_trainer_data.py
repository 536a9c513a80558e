"""Data sets: synthetic images and fields (deterministic, learnable), and the FourCastNet HDF5
reader on small generated files."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from trainer.config import AfnoShape, TrainConfig
from trainer.data import Batches, build_data, make_loader
from trainer.data.fields import TRAJECTORY_STEPS, SyntheticFields, era5_fields
from trainer.data.images import SyntheticImages
from trainer.errors import DataError

SHAPE = AfnoShape(img_height=8, img_width=16, in_channels=3, out_channels=2, patch_size=4,
                  embed_dim=16, depth=1, num_blocks=2)  # fmt: skip


def test_synthetic_images_are_deterministic_per_seed_and_carry_their_class():
    a = SyntheticImages(50, 4, 16, seed=3, split=0)
    b = SyntheticImages(50, 4, 16, seed=3, split=0)
    x, y = a[7]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and 0 <= y < 4
    torch.testing.assert_close(b[7][0], x)
    assert not torch.equal(SyntheticImages(50, 4, 16, seed=4, split=0)[7][0], x)
    assert not torch.equal(SyntheticImages(50, 4, 16, seed=3, split=1)[7][0], x)
    # Learnable: the class decides the colour of the stripes, so a per-class mean-colour
    # template (from one half) classifies the other half far above chance (25 %).
    items = [a[i] for i in range(50)]
    feats = torch.stack([(x * x.mean(0, keepdim=True)).mean((1, 2)) for x, _ in items])
    labels = torch.tensor([y for _, y in items])
    templates = torch.stack(
        [feats[:25][labels[:25] == c].mean(0) if (labels[:25] == c).any() else torch.zeros(3)
         for c in range(4)]
    )  # fmt: skip
    guess = torch.cdist(feats[25:], templates).argmin(1)
    assert (guess == labels[25:]).float().mean() > 0.5


def test_synthetic_fields_evolve_by_one_fixed_linear_map():
    ds = SyntheticFields(3 * TRAJECTORY_STEPS, SHAPE, 1, seed=0, split=0)
    x, y = ds[5]
    assert x.shape == (3, 8, 16) and y.shape == (2, 8, 16)
    assert not torch.allclose(x[:2], y, atol=1e-3)  # the fields move
    # Every Fourier mode is rotated by the same phase at every time and in every trajectory:
    # the next step is predictable from the current one.
    ratios = []
    for index in (5, 6, TRAJECTORY_STEPS + 20):
        x, y = ds[index]
        fx, fy = np.fft.rfft2(x[:2].double().numpy()), np.fft.rfft2(y.double().numpy())
        strong = np.abs(fx) > 1e-3 * np.abs(fx).max()
        ratios.append(np.where(strong, fy / np.where(strong, fx, 1), 0))
    np.testing.assert_allclose(ratios[0], ratios[1], atol=1e-4)
    mask = (np.abs(ratios[0]) > 0) & (np.abs(ratios[2]) > 0)
    np.testing.assert_allclose(ratios[0][mask], ratios[2][mask], atol=1e-4)
    two = SyntheticFields(3 * TRAJECTORY_STEPS, SHAPE, 2, seed=0, split=0)
    x2, y2 = two[5]
    _, y = ds[5]
    assert y2.shape == (4, 8, 16)
    torch.testing.assert_close(y2[:2], y)
    torch.testing.assert_close(y2[2:], ds[6][1])
    torch.testing.assert_close(x2, ds[5][0])


def _write_layout(root: Path, years=(2016, 2017), t=5, c=4, h=9, w=16) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = {}
    for folder, yrs in (("train", years), ("test", (2018,))):
        (root / folder).mkdir(parents=True)
        for year in yrs:
            fields = rng.normal(10.0, 3.0, (t, c, h, w)).astype(np.float32)
            with h5py.File(root / folder / f"{year}.h5", "w") as f:
                f.create_dataset("fields", data=fields)
            data[year] = fields
    (root / "stats").mkdir()
    np.save(root / "stats" / "global_means.npy", np.full((1, c, 1, 1), 10.0))
    np.save(
        root / "stats" / "global_stds.npy",
        np.arange(1, c + 1, dtype=np.float64).reshape(1, c, 1, 1),
    )
    np.save(root / "stats" / "time_means.npy", np.full((1, c, h, w), 12.0))
    return data


def test_hdf5_reader_indexes_years_normalises_and_crops(tmp_path):
    data = _write_layout(tmp_path)
    train, test, clim, stds = era5_fields(str(tmp_path), SHAPE, n_future=1)
    assert len(train) == 2 * 4 and len(test) == 4  # T - 1 samples per year, never across years
    x, y = train[6]  # second year, t = 2
    means, scale = 10.0, np.arange(1, 5, dtype=np.float32)[:, None, None]
    expect_x = (data[2017][2, :3, :8] - means) / scale[:3]
    expect_y = (data[2017][3, :2, :8] - means) / scale[:2]
    np.testing.assert_allclose(x.numpy(), expect_x, rtol=1e-6)
    np.testing.assert_allclose(y.numpy(), expect_y, rtol=1e-6)
    assert clim.shape == (2, 8, 16) and np.allclose(clim, (12.0 - 10.0) / scale[:2])
    assert stds.tolist() == [1.0, 2.0]
    two, _, _, _ = era5_fields(str(tmp_path), SHAPE, n_future=2)
    assert len(two) == 2 * 3
    x2, y2 = two[3]  # second year, t = 0
    np.testing.assert_allclose(
        y2[2:].numpy(), (data[2017][2, :2, :8] - means) / scale[:2], rtol=1e-6
    )
    assert x2.shape == (3, 8, 16)


def test_hdf5_reader_works_in_loader_workers(tmp_path):
    _write_layout(tmp_path)
    train, _, _, _ = era5_fields(str(tmp_path), SHAPE, n_future=1)
    train[0]  # an open handle in this process must not reach the workers
    loader = make_loader(
        train, 2, world_size=1, rank=0, seed=0, workers=1, train=True, pin_memory=False
    )
    loader.sampler.set_epoch(0)
    batches = list(loader)
    assert len(batches) == 4 and batches[0][0].shape == (2, 3, 8, 16)


def test_hdf5_layout_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="expected FourCastNet's layout"):
        era5_fields(str(tmp_path), SHAPE, 1)
    _write_layout(tmp_path / "small", h=4)
    with pytest.raises(DataError, match="the model needs at least"):
        era5_fields(str(tmp_path / "small"), SHAPE, 1)
    _write_layout(tmp_path / "nostats")
    (tmp_path / "nostats" / "stats" / "global_stds.npy").unlink()
    with pytest.raises(DataError, match="global_stds.npy not found"):
        era5_fields(str(tmp_path / "nostats"), SHAPE, 1)


def test_train_loader_shards_evenly_and_data_fraction_takes_the_head():
    config = TrainConfig(model="resnet50", image_size=8, num_classes=3, synthetic_size=50,
                         data_fraction=0.5)  # fmt: skip
    bundle = build_data(config)
    assert len(bundle.train) == 25 and bundle.name == "synthetic-images[:0.5]"
    lengths = [
        len(
            make_loader(
                bundle.train,
                4,
                world_size=3,
                rank=r,
                seed=0,
                workers=0,
                train=True,
                pin_memory=False,
            )
        )  # fmt: skip
        for r in range(3)
    ]
    assert lengths == [2, 2, 2]  # 25 // 3 = 8 per rank, 2 full batches each


def test_started_workers_serve_the_first_epoch_with_the_same_batches():
    config = TrainConfig(model="resnet50", image_size=8, num_classes=3, synthetic_size=24)
    train = build_data(config).train
    args = dict(world_size=2, rank=1, seed=0, train=True, pin_memory=False)
    plain = Batches(make_loader(train, 4, workers=0, **args))
    expected = {e: [y.tolist() for _, y in plain.iterate(e)] for e in (1, 2)}
    assert expected[1] != expected[2]  # set_epoch reshuffles
    early = Batches(make_loader(train, 4, workers=2, **args))
    early.start(epoch=1)
    assert early.loader._iterator is not None  # the workers run before the first epoch asks
    for epoch in (1, 1, 2):  # the early batches once, then fresh epochs on the same workers
        assert [y.tolist() for _, y in early.iterate(epoch)] == expected[epoch]
    plain.start(epoch=1)  # without workers there is nothing to start
    assert [y.tolist() for _, y in plain.iterate(1)] == expected[1]


def test_loader_workers_leave_ctrl_c_and_sigterm_to_the_trainer():
    config = TrainConfig(model="resnet50", image_size=8, num_classes=3, synthetic_size=32)
    args = dict(world_size=1, rank=0, seed=0, train=True, pin_memory=False)
    batches = Batches(make_loader(build_data(config).train, 2, workers=2, **args))
    batches.start(epoch=0)
    epoch = batches.iterate(0)
    next(epoch), next(epoch)  # one batch from each worker: both have run their init
    workers = batches.loader._iterator._workers
    for worker in workers:  # what a terminal's Ctrl-C or scancel does to the whole group
        os.kill(worker.pid, signal.SIGINT)
        os.kill(worker.pid, signal.SIGTERM)
    time.sleep(0.5)  # time to die, had they not ignored it
    assert len(list(epoch)) == 14 and all(w.is_alive() for w in workers)
