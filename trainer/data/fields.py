"""Weather fields for FourCastNet: the NVlabs HDF5 layout, or synthetic fields with real dynamics.

HDF5 layout (as FourCastNet's ERA5 pre-processing writes it):
  ROOT/train/<year>.h5 (dataset `fields` [T, C, H, W], 6-hourly), ROOT/test|valid|out_of_sample/
  for evaluation, and ROOT/stats/ (or ROOT/) `global_means.npy`, `global_stds.npy` [1, C, 1, 1] and
  optionally `time_means.npy` [1, C, H, W] (the climatology that ACC is taken against).
A sample is (fields at t, fields at t+1 [, t+2]) normalised by the global statistics, cropped to
the model's image size (upstream crops ERA5's 721 latitudes to 720) and to the first in/out
channels; time steps never cross a file (year) boundary.

Synthetic fields: every channel is a sum of travelling, dispersive plane waves on a periodic grid
(phase speed depends on the wave number, as for Rossby waves), with per-trajectory amplitudes and
phases. The next 6-hour step is a fixed linear map of the current one, a different phase rotation
per Fourier mode, which is exactly the kind of operator a spectral filter can learn.
"""

from __future__ import annotations

import bisect
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.errors import DataError

EVAL_DIRS = ("test", "valid", "out_of_sample")
TRAJECTORY_STEPS = 64
_MODES = 12


class Era5Fields(Dataset):
    def __init__(self, files: list[Path], means, stds, shape, n_future: int):
        self.files, self.n_future = files, n_future
        self.height, self.width = shape.img_height, shape.img_width
        self.in_ch, self.out_ch = shape.in_channels, shape.out_channels
        c = max(self.in_ch, self.out_ch)
        self.means = np.asarray(means, dtype=np.float32).reshape(-1)[:c, None, None]
        self.stds = np.asarray(stds, dtype=np.float32).reshape(-1)[:c, None, None]
        self.starts = [0]
        for path in files:
            t, ch, h, w = _fields_shape(path)
            if ch < c or h < self.height or w < self.width:
                raise DataError(
                    f"{path}: fields are {ch}x{h}x{w} (C x H x W), the model needs at least "
                    f"{c}x{self.height}x{self.width}"
                )
            self.starts.append(self.starts[-1] + max(0, t - n_future))
        self._handles: dict[int, tuple[int, object]] = {}

    def __len__(self) -> int:
        return self.starts[-1]

    def _file(self, k: int):
        import h5py

        pid, handle = self._handles.get(k, (None, None))
        if pid != os.getpid():  # h5py handles must not cross a fork into loader workers
            handle = h5py.File(self.files[k], "r")
            self._handles[k] = (os.getpid(), handle)
        return handle["fields"]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = bisect.bisect_right(self.starts, index) - 1
        t = index - self.starts[k]
        c = max(self.in_ch, self.out_ch)
        block = self._file(k)[t : t + self.n_future + 1, :c, : self.height, : self.width]
        block = (np.asarray(block, dtype=np.float32) - self.means) / self.stds
        x = block[0, : self.in_ch]
        y = block[1:, : self.out_ch].reshape(-1, self.height, self.width)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))

    def __getstate__(self):
        return {**self.__dict__, "_handles": {}}


def _fields_shape(path: Path) -> tuple[int, int, int, int]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            shape = f["fields"].shape
    except (OSError, KeyError) as exc:
        raise DataError(
            f"{path}: not a FourCastNet HDF5 file with a `fields` dataset ({exc})"
        ) from exc
    if len(shape) != 4:
        raise DataError(f"{path}: `fields` must be [T, C, H, W], got shape {shape}")
    return shape


def _load_stat(root: Path, name: str, required: bool) -> np.ndarray | None:
    for folder in (root / "stats", root):
        if (folder / name).is_file():
            return np.load(folder / name)
    if required:
        raise DataError(f"{root}: {name} not found in {root / 'stats'} or {root}")
    return None


def era5_fields(root: str, shape, n_future: int):
    """-> (train, eval or None, climatology [C, H, W] normalised, or None, stds [C])."""
    base = Path(root)
    if not (base / "train").is_dir():
        raise DataError(f"--data {root}: expected FourCastNet's layout with {base / 'train'}/*.h5")
    means = _load_stat(base, "global_means.npy", True)
    stds = _load_stat(base, "global_stds.npy", True)
    train_files = sorted((base / "train").glob("*.h5"))
    if not train_files:
        raise DataError(f"{base / 'train'}: no .h5 files")
    train = Era5Fields(train_files, means, stds, shape, n_future)
    evaluation = None
    for name in EVAL_DIRS:
        files = sorted((base / name).glob("*.h5")) if (base / name).is_dir() else []
        if files:
            evaluation = Era5Fields(files, means, stds, shape, n_future)
            break
    clim = _load_stat(base, "time_means.npy", False)
    if clim is not None:
        c = shape.out_channels
        clim = clim.reshape(clim.shape[-3:])[:c, : shape.img_height, : shape.img_width]
        clim = (clim - train.means[:c]) / train.stds[:c]
    return train, evaluation, clim, train.stds.reshape(-1)[: shape.out_channels]


class SyntheticFields(Dataset):
    def __init__(self, size: int, shape, n_future: int, seed: int, split: int):
        self.size, self.shape, self.n_future = size, shape, n_future
        self.seed, self.split = seed, split
        h, w, c = shape.img_height, shape.img_width, max(shape.in_channels, shape.out_channels)
        rng = np.random.default_rng([seed, 11])  # the "physics", shared by every split
        self.ky = rng.integers(-min(3, h // 2 - 1), min(3, h // 2 - 1) + 1, (c, _MODES))
        self.kx = rng.integers(1, min(6, w // 2 - 1) + 1, (c, _MODES))
        speed = rng.uniform(0.01, 0.03, (c, 1))  # fraction of the domain per 6-hour step
        rossby = 0.3 * self.kx / (self.kx**2 + self.ky**2 + 1.0)
        self.omega = 2 * math.pi * self.kx * speed - rossby  # radians per step

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        traj, t = divmod(index, TRAJECTORY_STEPS)
        rng = np.random.default_rng([self.seed, self.split, traj])
        c = self.omega.shape[0]
        amp = (
            rng.standard_normal((c, _MODES)) + 1j * rng.standard_normal((c, _MODES))
        ) / math.sqrt(_MODES)
        frames = [self._frame(amp, t + k) for k in range(self.n_future + 1)]
        s = self.shape
        x = frames[0][: s.in_channels]
        y = np.concatenate([f[: s.out_channels] for f in frames[1:]])
        return torch.from_numpy(x), torch.from_numpy(y)

    def _frame(self, amp: np.ndarray, t: int) -> np.ndarray:
        h, w = self.shape.img_height, self.shape.img_width
        spectrum = np.zeros((amp.shape[0], h, w // 2 + 1), dtype=np.complex128)
        coef = amp * np.exp(-1j * self.omega * t) * (h * w / 2)
        rows = np.broadcast_to(np.arange(amp.shape[0])[:, None], amp.shape)
        np.add.at(spectrum, (rows, self.ky % h, self.kx), coef)
        return np.fft.irfft2(spectrum, s=(h, w)).astype(np.float32)
