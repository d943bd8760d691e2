"""runtime.atomic: a failed write leaves the previous file and no temporary file; PNG grids go through it."""

import pytest
import torch

from vae_lightning.evaluation import pictures
from vae_lightning.runtime import atomic
from vae_lightning.runtime.atomic import atomic_open


def test_a_write_that_fails_half_way_leaves_the_old_file(tmp_path):
    target = tmp_path / "scores.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write("new, half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_a_complete_write_replaces_the_file(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    with atomic_open(target, "wb") as f:
        f.write(b"abc")
    assert target.read_bytes() == b"abc"


def test_png_grids_are_written_through_the_atomic_writer(tmp_path, monkeypatch):
    opened = []
    real_open = open

    def spy(file, mode="r", *args, **kwargs):
        opened.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", spy, raising=False)
    path = pictures.save_png(torch.rand(3, 8, 8), tmp_path / "grid.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(opened) == 1 and ".grid.png.tmp-" in opened[0]
