"""Every output path of every command is checked before the work starts (issue 16): pointed under
a regular file, each output flag gets one line naming it, exit status 2, no traceback, nothing
left behind, and no data loaded or model built first.

A new command or output flag adds one row to OUTPUTS: (command words, the name the message must
give, the arguments before the output (the placeholders below), the output's arguments with
{out} where the bad path goes). Runs in-process through `vae_lightning.cli.main`."""

from __future__ import annotations

from pathlib import Path

import pytest

from vae_lightning.cli import main
from vae_lightning.errors import UserError

# placeholders: {config} the YAML of the session's tiny run (conftest.tiny_run), {ckpt} its last.ckpt, {run} its
# root folder, {out} the bad output path
RUN = ["--config", "{config}"]
EVAL = [*RUN, "--ckpt_path", "{ckpt}"]
CSV_LOGGER = ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger"]

# (command, name in the message, arguments before the output, the output's arguments)
OUTPUTS = [
    *[
        (cmd, "trainer.default_root_dir", RUN if cmd == "fit" else EVAL, ["--trainer.default_root_dir", "{out}"])
        for cmd in ("fit", "validate", "test", "predict")
    ],
    *[
        (cmd, "checkpoint.dirpath", RUN if cmd == "fit" else EVAL, ["--checkpoint.dirpath", "{out}"])
        for cmd in ("fit", "validate", "test", "predict")
    ],
    *[
        (cmd, "images.dirpath", RUN if cmd == "fit" else EVAL, ["--images.dirpath", "{out}"])
        for cmd in ("fit", "validate", "test", "predict")
    ],
    *[
        (
            cmd,
            "trainer.logger.init_args.save_dir",
            (RUN if cmd == "fit" else EVAL) + CSV_LOGGER,
            ["--trainer.logger.init_args.save_dir", "{out}"],
        )
        for cmd in ("fit", "validate", "test", "predict")
    ],
    ("predict", "scores.path", EVAL, ["--scores.path", "{out}/scores.csv"]),
    *[(cmd, "--out", ["{ckpt}"], ["--out", "{out}/grid.png"]) for cmd in ("sample", "traverse", "interpolate")],
    ("encode", "--out", ["{ckpt}", *RUN, "--split", "test"], ["--out", "{out}/codes.npz"]),
    ("sample", "--out", ["{ckpt}", "--num", "4"], ["--out", "{out}/samples", "--format", "png"]),
    ("sample", "--out", ["{ckpt}", "--num", "4"], ["--out", "{out}/samples.npz"]),
    ("compare", "--out", ["{run}"], ["--out", "{out}"]),
    ("data prepare", "DST", ["{run}"], ["{out}/chunks"]),
    (
        "slurm submit",
        "trainer.default_root_dir",
        ["--config", "{config}", "--dry-run"],
        ["--", "--trainer.default_root_dir", "{out}"],
    ),
]


def _no_work(*args, **kwargs):
    raise AssertionError("the command started its work before checking its output paths")


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("command, name, before, output", OUTPUTS, ids=[f"{r[0]} {r[1]}" for r in OUTPUTS])
def test_an_output_under_a_regular_file_is_one_line_before_any_work(
    command, name, before, output, tiny_run, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr("sys.argv", ["vae"])
    monkeypatch.delenv("VAE_DEBUG", raising=False)
    # building classes, loading a checkpoint's model or calling sbatch is the work: none may start
    monkeypatch.setattr("vae_lightning.cli.lightning.VAECLI.instantiate_classes", _no_work)
    monkeypatch.setattr("vae_lightning.runtime.checkpoint.load_model", _no_work)
    monkeypatch.setattr("vae_lightning.cli.slurm.submit", _no_work)
    (tmp_path / "a_file").write_text("a regular file, not a folder")
    monkeypatch.chdir(tmp_path)  # relative defaults (runs/default) land here, where nothing may appear
    files = tree(tmp_path)
    bad = str(tmp_path / "a_file" / "sub")
    values = {**tiny_run, "out": bad}
    argv = [*command.split(), *(a.format(**values) for a in (*before, *output))]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vae: error:"), err[-2000:]
    assert name in lines[0] and bad in lines[0], lines[0]
    assert tree(tmp_path) == files, "the refused command left files or folders behind"


def test_check_output_makes_nothing_it_does_not_need(tmp_path):
    from vae_lightning.runtime.outputs import check_output

    check_output("--out", tmp_path / "new" / "deeper" / "grid.png")
    check_output("checkpoint.dirpath", tmp_path / "fresh", "dir")
    assert list(tmp_path.iterdir()) == []  # proved writable, then removed what it made
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match=r"--out .*folder.* is a folder"):
        check_output("--out", tmp_path / "folder")


def test_a_failed_final_write_keeps_the_result_in_the_run_folder(tmp_path):
    from vae_lightning.runtime.fallback import write_or_keep

    def write(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)  # fails under a regular file
        path.write_text("scores")

    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match=r"scores.path .*a_file.* kept in") as err:
        write_or_keep(write, tmp_path / "a_file" / "scores.csv", "scores.path", tmp_path)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("scores.unsaved-")]
    assert len(kept) == 1 and kept[0].read_text() == "scores" and str(kept[0]) in str(err.value)
    assert write_or_keep(write, tmp_path / "ok.csv", "scores.path", tmp_path) == tmp_path / "ok.csv"
