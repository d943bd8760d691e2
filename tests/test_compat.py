"""The private Lightning/W&B/jsonargparse/torch/scikit-learn attributes that vae_lightning.runtime.compat relies on
still exist, and every hook our callbacks and CLI override is marked with @override."""

import importlib
import inspect

import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector

from vae_lightning import callbacks
from vae_lightning.cli.lightning import VAECLI, LogConfig
from vae_lightning.runtime import compat
from vae_lightning.runtime.checkpoint import AtomicCheckpointIO


@pytest.fixture(scope="module")
def owners(tmp_path_factory):
    root = tmp_path_factory.mktemp("compat")
    parser = ArgumentParser()
    subcommands = parser.add_subcommands()
    fit = ArgumentParser()
    fit.add_argument("--max_steps", type=int)
    subcommands.add_subcommand("fit", fit)
    return {
        "Trainer": Trainer(
            logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=str(root)
        ),
        "ModelCheckpoint": ModelCheckpoint(dirpath=str(root)),
        "_CheckpointConnector": _CheckpointConnector,
        "LightningCLI": LightningCLI,
        "ArgumentParser": parser,
        "WandbLogger": WandbLogger(offline=True, save_dir=str(root)),  # not started: no run, no network
        "wandb.errors.term": importlib.import_module("wandb.errors.term"),
        "LightningModule": LightningModule(),
        "torch": torch,
        "HistGradientBoostingClassifier": _fitted_hist_gradient_boosting(),
    }


def _fitted_hist_gradient_boosting():
    """Two boosting rounds on 40 points whose class is the sign of the first feature (a few milliseconds)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0)).numpy()
    return HistGradientBoostingClassifier(max_iter=2, min_samples_leaf=5, random_state=0).fit(x, x[:, 0] > 0)


@pytest.mark.parametrize("owner, attribute", compat.PRIVATE, ids=[f"{o}.{a}" for o, a in compat.PRIVATE])
def test_every_private_attribute_that_compat_uses_still_exists(owners, owner, attribute):
    assert hasattr(owners[owner], attribute), (
        f"{owner}.{attribute} is gone in this Lightning/W&B/jsonargparse/torch/scikit-learn release; "
        "update vae_lightning/runtime/compat.py"
    )


def test_the_compat_functions_read_real_objects(owners, tmp_path):
    trainer, logger = owners["Trainer"], owners["WandbLogger"]
    from lightning.fabric.plugins.environments import ClusterEnvironment

    assert isinstance(compat.cluster_environment(trainer), ClusterEnvironment)
    assert isinstance(compat.should_update_logs(trainer), bool)
    assert list(compat.logged_values(trainer)) == []  # nothing logged outside a step
    assert compat.last_global_step_saved(owners["ModelCheckpoint"]) == 0
    assert compat.hpc_save_path(str(tmp_path)).endswith("hpc_ckpt_1.ckpt")
    assert compat.subcommand_options(owners["ArgumentParser"], "fit") == ["max_steps"]
    assert compat.wandb_offline(logger) and not compat.wandb_started(logger)
    assert compat.wandb_init_args(logger)["dir"] == logger.save_dir  # what wandb.init will receive
    assert compat.attached_trainer(owners["LightningModule"]) is None
    splits = compat.hist_gradient_boosting_splits(owners["HistGradientBoostingClassifier"])
    assert len(splits) == 2 and all(len(nodes) for nodes in splits)  # one tree per round, each with a split
    assert {int(f) for nodes in splits for f in nodes["feature_idx"]} == {0}  # the feature that decides the class
    assert all((nodes["gain"] > 0).all() for nodes in splits)


def test_the_fused_non_finite_check_flags_only_non_finite_values_and_leaves_them_bitwise():
    grads = [torch.tensor([1.5, -2.0]), torch.tensor([3.0e38])]
    before = [g.clone() for g in grads]
    found = torch.zeros(())
    compat.non_finite_check_(grads, found, torch.ones(()))
    assert found.item() == 0.0 and all(torch.equal(g, b) for g, b in zip(grads, before))
    compat.non_finite_check_([torch.tensor([1.0, float("nan")])], found, torch.ones(()))
    assert found.item() == 1.0


def _overridden_hooks(cls):
    """Methods ``cls`` defines itself that a base class also defines (public or private)."""
    for name, member in vars(cls).items():
        if name.startswith("__") or not callable(member):
            continue
        if any(name in vars(base) for base in cls.__mro__[1:]):
            yield name, member


OURS = [getattr(callbacks, name) for name in callbacks.__all__ if inspect.isclass(getattr(callbacks, name))]
OURS += [LogConfig, VAECLI, AtomicCheckpointIO]


@pytest.mark.parametrize("cls", OURS, ids=lambda c: c.__name__)
def test_every_overridden_hook_is_marked_override(cls):
    unmarked = [
        name for name, fn in _overridden_hooks(cls) if name != "__init__" and not getattr(fn, "__override__", False)
    ]
    assert not unmarked, f"{cls.__name__} overrides {unmarked} without @override"
