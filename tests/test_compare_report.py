"""The report of `vae compare` at its default options over a fabricated study-file study (3 models
x 2 values of each one's own hyper-parameter x 3 seeds, folders written as `vae study run` lays
them out): the columns, the default grouping, the figures (without a matplotlib warning, and laid
out: no collapsed axes, no clipped label, no legend over an axes), and the two analyses (Spearman
matrix, variance shares) against independent computations."""

from __future__ import annotations

import contextlib
import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from fabricated_study import ENTRIES, METRICS, SEEDS, write_task

from vae_lightning.cli import main as vae_main
from vae_lightning.cli.compare import analyses
from vae_lightning.evaluation import compare as c
from vae_lightning.evaluation import compare_stats as s
from vae_lightning.evaluation import compare_table as t


def fabricate(study: Path, effect) -> None:
    """Every task of the study; ``effect(entry, index of the value, seed, metric index)`` its metric values."""
    for entry, (_, _, _, values) in ENTRIES.items():
        for v, value in enumerate(values):
            for seed in SEEDS:
                metrics = {m: effect(entry, v, seed, i) for i, m in enumerate(METRICS)}
                write_task(study, entry, value, seed, metrics, restarts=int(entry == "factor_vae" and seed == 2))


def noisy(rng: np.random.Generator):
    shift = {"beta_vae": 0.0, "beta_tcvae": 5.0, "factor_vae": -3.0}
    return lambda entry, v, seed, i: float(100 * (i + 1) + shift[entry] * (i + 1) + 2 * v + rng.normal(0, 2))


LAYOUTS: dict[str, dict] = {}  # figure file name -> what check_layout measured


def shown_ticks(ax) -> list:
    """The tick labels drawn: those of ticks inside the axis' limits."""
    out = []
    for labels, limits, i in ((ax.get_xticklabels(), ax.get_xlim(), 0), (ax.get_yticklabels(), ax.get_ylim(), 1)):
        low, high = sorted(limits)
        out += [t for t in labels if low - 1e-9 <= t.get_position()[i] <= high + 1e-9]
    return out


def check_layout(fig, path) -> None:
    """Before a figure is saved, after its layout: every visible axes at least 100 x 60 px (not
    collapsed), every label and title inside the figure (not clipped), no legend over an axes or
    over a label or title."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for ax in axes:
        box = ax.get_window_extent(renderer)
        if getattr(ax, "_colorbar", None) is None:  # a colour bar is narrow by design
            assert box.width >= 100 and box.height >= 60, (path, "collapsed axes", box.bounds)
    texts = [t for ax in axes for t in shown_ticks(ax)]
    texts += [t for ax in axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label)]
    texts += [fig._suptitle] if fig._suptitle is not None else []
    for text in texts:
        if text.get_visible() and text.get_text():
            box = text.get_window_extent(renderer)
            inside = box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y0 >= page.y0 - 1 and box.y1 <= page.y1 + 1
            assert inside, (path, "clipped", text.get_text(), box.bounds, page.bounds)
    legends = [*fig.legends, *(ax.get_legend() for ax in axes if ax.get_legend() is not None)]
    titles = [t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text()]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in axes), (path, "legend over an axes")
        assert not any(box.overlaps(title) for title in titles), (path, "legend over a label or title")
    labels = [t.get_text() for legend in legends for t in legend.get_texts()]
    LAYOUTS[Path(path).name] = {"axes": len(axes), "legends": len(legends), "texts": len(texts), "labels": labels}


@contextlib.contextmanager
def laid_out():
    """Warnings as errors (a layout warning of matplotlib, "constrained_layout not applied", fails)
    and ``check_layout`` on every figure as it is saved."""
    from matplotlib.figure import Figure

    save = Figure.savefig

    def checked(fig, path, *args, **kwargs):
        check_layout(fig, path)
        return save(fig, path, *args, **kwargs)

    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("error")
        patch.setattr(Figure, "savefig", checked)
        yield


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The default report (--out --html) of the fabricated study, its figures ``laid_out``."""
    tmp_path = tmp_path_factory.mktemp("report")
    fabricate(tmp_path / "study", noisy(np.random.default_rng(0)))
    out = tmp_path / "report"
    with laid_out():
        vae_main(["compare", "--study", str(tmp_path / "study"), "--out", str(out), "--html"])
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_columns_qualify_shared_keys_and_leave_unused_parameters_empty(report):
    runs = read_csv(report / "runs.csv")
    assert len(runs) == 18
    columns = list(runs[0])
    # beta and gamma mean different things in different classes: one column per class that has them
    assert {"BetaVAE.beta", "BetaTCVAE.beta", "BetaTCVAE.gamma", "FactorVAE.gamma"} <= set(columns)
    assert "beta" not in columns and "gamma" not in columns and "class_path" not in columns
    assert "model.class_path" in columns  # usable as --group-by model.class_path
    assert "BetaVAE.gamma" not in columns and not any("c_steps" in k for k in columns)  # unused by plain β-VAE
    assert {"entry", "steps", "restarts", "wall_time_s"} <= set(columns)
    for row in runs:
        assert row["steps"] == "300" and float(row["wall_time_s"]) == pytest.approx(109.5)  # the whole task
        assert row["restarts"] == ("1" if row["entry"] == "factor_vae" and row["seed_everything"] == "2" else "0")
        assert (row["FactorVAE.gamma"] != "") == (row["entry"] == "factor_vae")
        assert (row["BetaVAE.beta"] != "") == (row["entry"] == "beta_vae")


def test_default_grouping_is_the_entries_and_grid_points(report):
    groups = read_csv(report / "groups.csv")
    assert [(g["entry"], g["point"], g["n"]) for g in groups] == [
        ("beta_tcvae", "beta=2", "3"),
        ("beta_tcvae", "beta=6", "3"),
        ("beta_vae", "beta=1", "3"),
        ("beta_vae", "beta=4", "3"),
        ("factor_vae", "gamma=10", "3"),
        ("factor_vae", "gamma=40", "3"),
    ]


def test_the_figures_are_there_and_only_swept_numeric_keys_get_panels(report):
    expected = {
        "metrics_by_group",
        "metrics_vs_beta",
        "metrics_vs_gamma",
        "variance_shares",
        "spearman",
        "learning_curves",
        "rate_distortion",
    }
    assert {p.stem for p in report.glob("*.png")} == expected
    assert {Path(name).stem for name in LAYOUTS} == expected  # each was laid out and checked
    assert LAYOUTS["metrics_by_group.png"]["axes"] == len(METRICS) and LAYOUTS["rate_distortion.png"]["legends"] == 1
    # one key, two meanings: the legend says which class's parameter each line sweeps
    assert LAYOUTS["metrics_vs_beta.png"]["labels"] == ["beta_tcvae (BetaTCVAE.beta)", "beta_vae (BetaVAE.beta)"]
    assert LAYOUTS["metrics_vs_gamma.png"]["labels"] == ["factor_vae"]
    for path in report.glob("*.png"):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width = int.from_bytes(data[16:20], "big")
        assert 300 < width <= 1350, (path.name, width)  # shown unscaled at 1,400 px
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(expected)


def test_spearman_matrix_equals_rank_then_pearson(report):
    runs = {r["run"]: r for r in read_csv(report / "runs.csv")}
    values = np.array([[float(r[m]) for m in METRICS] for r in runs.values()])
    ranked = np.empty_like(values)
    for j in range(values.shape[1]):  # ranks 1..n; the fabricated values have no ties
        ranked[np.argsort(values[:, j]), j] = np.arange(1, len(values) + 1)
    expected = np.corrcoef(ranked, rowvar=False)
    table = read_csv(report / "spearman.csv")
    got = np.array([[float(row[m]) for m in METRICS] for row in table])
    assert [row["metric"] for row in table] == list(METRICS)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_ranks_share_ties():
    assert s.ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


@pytest.mark.parametrize(
    "effect, explained_by",
    [
        (lambda entry, v, seed, i: {"beta_vae": 1.0, "beta_tcvae": 2.0, "factor_vae": 7.0}[entry], "model"),
        (lambda entry, v, seed, i: 3.0 * v, "hyper-parameter"),
        (lambda entry, v, seed, i: float(seed**2), "seed"),
    ],
)
def test_variance_share_of_a_single_effect_is_all_of_it(tmp_path, effect, explained_by):
    fabricate(tmp_path / "study", effect)
    runs, _ = c.find_runs([], str(tmp_path / "study"))
    groups = t.group_runs(runs, c.default_group_keys(runs, []))
    setting = {id(r): g.values for g in groups for r in g.runs}
    shares = s.variance_shares(runs, "test/mig", lambda r: r.config["entry"], lambda r: setting[id(r)])
    assert shares[explained_by] == pytest.approx(1.0) and sum(shares.values()) == pytest.approx(1.0)
    variance, _ = analyses(runs, groups, c.default_group_keys(runs, []), ["test/mig"])  # what the report shows
    assert dict(zip(variance.columns, variance.rows[0], strict=True))[explained_by] == pytest.approx(1.0)


def test_variance_shares_add_up_and_match_the_sums_of_squares(report):
    runs, _ = c.find_runs([], str(report.parent / "study"))
    y = np.array([r.metric("test/kl") for r in runs])
    entry = np.array([r.config["entry"] for r in runs])
    setting = np.array([f"{r.config['entry']}/{r.config['point']}" for r in runs])
    between = sum((entry == e).sum() * (y[entry == e].mean() - y.mean()) ** 2 for e in set(entry))
    row = next(r for r in read_csv(report / "variance.csv") if r["metric"] == "test/kl")
    assert float(row["model"]) == pytest.approx(between / ((y - y.mean()) ** 2).sum())
    within = sum(((y[setting == g] - y[setting == g].mean()) ** 2).sum() for g in set(setting))
    assert float(row["seed"]) == pytest.approx(within / ((y - y.mean()) ** 2).sum())
    assert sum(float(row[f]) for f in s.FACTORS) == pytest.approx(1.0)


def test_capacity_form_drops_beta_and_plain_form_drops_capacity():
    plain = {"model.class_path": "vae_lightning.BetaVAE", "model.init_args.beta": 4.0, "model.init_args.c_max": None}
    plain |= {"model.init_args.c_steps": 100000, "model.init_args.gamma": 1000.0}
    assert set(c.drop_unused(plain)) == {"model.class_path", "model.init_args.beta", "model.init_args.c_max"}
    capacity = {**plain, "model.init_args.c_max": 25.0}
    assert "model.init_args.beta" not in c.drop_unused(capacity) and "model.init_args.gamma" in c.drop_unused(capacity)
    other = {"model.class_path": "vae_lightning.FactorVAE", "model.init_args.gamma": 40.0}
    assert c.drop_unused(other) == other
    assert math.isnan(s.variance_shares([], "test/kl", str, str)["seed"])


def test_a_header_is_a_group_by_name_and_that_report_renders_without_warnings(report, tmp_path):
    out = tmp_path / "by_class"
    with laid_out():
        vae_main(
            [
                "compare",
                "--study",
                str(report.parent / "study"),
                "--group-by",
                "model.class_path",
                "--metrics",
                "test/kl",
                "test/recon",
                "--out",
                str(out),
            ]
        )
    groups = read_csv(out / "groups.csv")
    assert [(g["model.class_path"], g["n"]) for g in groups] == [
        ("vae_lightning.BetaTCVAE", "6"),
        ("vae_lightning.BetaVAE", "6"),
        ("vae_lightning.FactorVAE", "6"),
    ]
    assert (out / "metrics_by_group.png").is_file() and (out / "variance_shares.png").is_file()


def test_runs_without_study_records_group_by_their_differing_keys_and_lay_out(tmp_path):
    fabricate(tmp_path / "study", noisy(np.random.default_rng(1)))
    for record in (tmp_path / "study").glob("*/task.json"):
        record.unlink()  # folders as `vae slurm submit --study` or a hand-made loop leave them
    with laid_out():
        vae_main(
            [
                "compare",
                "--study",
                str(tmp_path / "study"),
                "--metrics",
                "test/kl",
                "test/recon",
                "--out",
                str(tmp_path / "out"),
            ]
        )
    groups = read_csv(tmp_path / "out" / "groups.csv")
    assert len(groups) == 6 and "entry" not in groups[0] and "model.class_path" in groups[0]
    runs = read_csv(tmp_path / "out" / "runs.csv")
    assert {r["wall_time_s"] for r in runs} == {"25.6"} and {r["restarts"] for r in runs} == {""}  # training only
    assert (tmp_path / "out" / "metrics_by_group.png").is_file()
