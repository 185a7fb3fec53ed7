"""The data module on the real data, and the fetcher's verification and safety."""

import gzip
import io
import pickle
import shutil

import numpy as np
import pytest
import torch

from diffusion.data import DataMissingError, ImageDataModule, load_split
from diffusion.datasets import DataError, DataSpec, raw_dir, read_idx
from diffusion.fetch import FILES, NumpyOnlyUnpickler, fetch, idx_bytes, mnist_from_pickle, verify


@pytest.fixture(scope="module", params=["mnist", "fashion"])
def dm(request, data_root):
    dm = ImageDataModule(name=request.param, root=str(data_root), batch_size=256)
    dm.prepare_data()
    dm.setup()
    return dm


def test_shapes_range_and_border(dm):
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (256, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    edges = (x[..., :2, :], x[..., -2:, :], x[..., :, :2], x[..., :, -2:])
    border = torch.cat([e.flatten() for e in edges])
    assert (border == -1.0).all()  # background value after scaling


def test_split_sizes_and_label_counts(dm):
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55000, 5000, 10000)
    train_labels = torch.cat([dm.train_set.dataset.tensors[1][dm.train_set.indices],
                              dm.val_set.dataset.tensors[1][dm.val_set.indices]])
    assert torch.bincount(train_labels).tolist() == list(DataSpec.of(dm.name).counts["train"])
    assert torch.bincount(dm.test_set.tensors[1]).tolist() == list(DataSpec.of(dm.name).counts["test"])


def test_split_is_seeded(data_root):
    a, b = (ImageDataModule(root=str(data_root), split_seed=s) for s in (0, 0))
    c = ImageDataModule(root=str(data_root), split_seed=1)
    for m in (a, b, c):
        m.setup()
    assert a.val_set.indices == b.val_set.indices != c.val_set.indices


def test_pixels_match_raw_files(data_root):
    images, _ = load_split(data_root, "mnist", train=True)
    assert images.float().mean().item() == pytest.approx(33.3184, abs=1e-4)


def test_missing_data_names_make_data(tmp_path):
    with pytest.raises(DataMissingError, match="make data"):
        ImageDataModule(root=str(tmp_path)).prepare_data()


def test_bad_options_raise():
    with pytest.raises(ValueError, match="data.name"):
        ImageDataModule(name="cifar")
    with pytest.raises(ValueError, match="batch_size"):
        ImageDataModule(batch_size=0)


def test_verify_detects_corruption_and_fetch_redoes_it(data_root, tmp_path):
    shutil.copytree(raw_dir(data_root, "fashion"), raw_dir(tmp_path, "fashion"))
    assert "verified" in verify(tmp_path, "fashion")
    f = raw_dir(tmp_path, "fashion") / "train-images-idx3-ubyte"
    data = bytearray(f.read_bytes())
    data[5000] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(DataError, match="SHA-256"):
        verify(tmp_path, "fashion")
    (raw_dir(tmp_path, "fashion") / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01partial")
    log = []
    assert "verified" in fetch(tmp_path, "fashion", log=log.append)  # re-fetched from the offline package
    assert log and "Debian" in log[0]


def test_idx_roundtrip_and_truncation():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(idx_bytes(a)), a)
    with pytest.raises(DataError):
        read_idx(idx_bytes(a)[:-1])


def test_mnist_pickle_conversion_and_labels():
    rng = np.random.default_rng(0)
    split = lambda n: (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n))  # noqa: E731
    tr, va, te = split(5), split(3), split(2)
    files = mnist_from_pickle(gzip.compress(pickle.dumps((tr, va, te), protocol=4)))
    assert set(files) == set(FILES)
    images = read_idx(files["train-images-idx3-ubyte"])
    assert images.shape == (8, 28, 28)
    assert np.array_equal(images[:5].reshape(5, -1), np.round(tr[0] * 256).astype(np.uint8))
    assert read_idx(files["t10k-labels-idx1-ubyte"]).tolist() == te[1].tolist()


def test_unpickler_refuses_anything_but_numpy_arrays():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()
