"""``vae slurm submit``: write the sbatch script for a ``vae fit`` run and submit it.

    vae slurm submit --config configs/base.yaml --config configs/sprites/vae.yaml --gpus-per-node 4 --dry-run
    vae slurm submit --config ... --nodes 2 --gpus-per-node 4 --time 24:00:00 --partition gpu
    vae slurm submit --config ... --array model.init_args.beta=1,2,4,8 -- --trainer.max_steps 50000

One task per device (``--ntasks-per-node`` = devices), ``srun --kill-on-bad-exit=1`` to start
them (Lightning reads ranks from SLURM; a task that fails ends the others), ``--requeue``,
``--signal=USR1@120`` (two minutes before the time limit the run checkpoints at the next step and
requeues itself) and ``--open-mode=append`` (a restarted job appends to its log). The templates
in ``slurm/`` are this module's output. What a run inside a job needs to know (job id, W&B run
id, allocation checks) lives in ``vae_lightning.runtime.slurm``. Rendering imports neither torch nor
lightning; before it writes the script, the command parses the fit line once per swept value as
``vae fit`` would (a few seconds), so a misspelled key is refused, not sent to every task.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from vae_lightning.cli import study
from vae_lightning.cli.arguments import Parser
from vae_lightning.cli.console import hyphenated
from vae_lightning.cli.saved_config import read_config_file
from vae_lightning.errors import UserError
from vae_lightning.runtime.outputs import check_output

SIGNAL_SECONDS = 120  # time to finish a step and write a checkpoint before SLURM's time limit

# the templates shipped in slurm/, as the `vae slurm submit` arguments that render them
SPRITES = ["--config", "configs/base.yaml", "--config", "configs/sprites/vae.yaml"]
TEMPLATES = {
    "single_gpu.sbatch": [*SPRITES, "--gpus-per-node", "1", "--time", "24:00:00"],
    "multi_gpu.sbatch": [*SPRITES, "--gpus-per-node", "4", "--cpus-per-task", "8", "--time", "24:00:00"],
    "multi_node.sbatch": [
        *SPRITES,
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
        "--cpus-per-task",
        "8",
        "--time",
        "24:00:00",
    ],
    "sweep_beta.sbatch": [
        "--config",
        "configs/base.yaml",
        "--config",
        "configs/sprites/vae.yaml",
        "--config",
        "configs/sprites/beta_vae.yaml",
        "--gpus-per-node",
        "1",
        "--time",
        "24:00:00",
        "--array",
        "model.init_args.beta=1,2,4,8,16",
    ],
}


@dataclass
class Job:
    """One ``vae fit`` job: ``nodes`` × ``tasks_per_node`` processes, one per device."""

    configs: list[str]
    nodes: int = 1
    gpus_per_node: int = 1  # 0: a CPU job
    tasks_per_node: int = 1
    cpus_per_task: int | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    grid: list[tuple[str, list[str]]] = field(default_factory=list)  # swept (key, values): one task per combination
    name: str = "vae"  # the SLURM job name (an #SBATCH value: see DIRECTIVE_VALUE)
    group: str | None = None  # the W&B group (the study's name); None: the job name
    root: str = "runs/default"  # a study's tasks train in <root>/<key=value,...>
    test: bool = False  # after the fit, `vae test` the best checkpoint in the same job and W&B run
    wandb: bool = False  # the logger is a WandbLogger: set group, job_type and tags
    fit_args: list[str] = field(default_factory=list)
    study_tasks: int = 0  # a study file's array (`vae study submit`): its number of tasks
    log_dir: str | None = None  # where SLURM writes the logs (an #SBATCH value); None: the submit folder
    command: str = ""  # the `vae slurm submit` line, for the script's header


#: what sbatch reads on an ``#SBATCH`` line as one value: it is not a shell, so nothing there is
#: quoted; a value with other characters (a space, a quote, a newline) is refused instead
DIRECTIVE_VALUE = re.compile(r"[\w.:,+@%-]+")


def _q(text: str) -> str:
    return shlex.quote(str(text))


def _comment(text: str) -> str:
    """``text`` for one comment line: a newline or other control character is written escaped, so
    it cannot end the comment and start a command."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _directive_value(flag: str, value: str) -> str:
    if not DIRECTIVE_VALUE.fullmatch(value):
        raise UserError(
            f"--{flag} {value!r} cannot go on an #SBATCH line; use letters, digits and . _ : , + @ % - only."
        )
    return value


def job_name(name: str) -> str:
    """A study's name as a SLURM job name: characters an ``#SBATCH`` line cannot hold become ``_``."""
    return re.sub(r"[^\w.+-]", "_", name)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 'es' if noun.endswith('s') else 's'}"


def render(job: Job, vae: str = "vae") -> str:
    """The sbatch script for ``job``; ``vae`` is the command that runs the CLI."""
    gpus = job.gpus_per_node
    devices = f"{_n(job.nodes, 'node')} x {_n(job.tasks_per_node, 'GPU' if gpus else 'CPU process')}"
    # (comment, directive) pairs; sbatch reads no comment on a directive's own line
    sbatch = [
        (None, f"--job-name={job.name}"),
        (None, f"--nodes={job.nodes}"),
        (
            "one task per device: Lightning reads each process's rank from SLURM",
            f"--ntasks-per-node={job.tasks_per_node}",
        ),
    ]
    if gpus:
        sbatch.append((None, f"--gpus-per-node={gpus}"))
    for flag, value in (
        ("cpus-per-task", job.cpus_per_task),
        ("time", job.time),
        ("partition", job.partition),
        ("account", job.account),
    ):
        if value is not None:
            sbatch.append((None, f"--{flag}={value}"))
    log = "slurm-%x-%j.out"
    if job.study_tasks:
        sbatch.append(("one array task per task of the study", f"--array=0-{job.study_tasks - 1}"))
        log = "slurm-%x-%A_%a.out"
    elif job.grid:
        keys = " x ".join(k for k, _ in job.grid)
        sbatch.append((f"one array task per combination of {keys}", f"--array=0-{len(study.tasks(job.grid)) - 1}"))
        log = "slurm-%x-%A_%a.out"
    sbatch += [
        ("a preempted or requeued job starts again and resumes from its hpc_ckpt", "--requeue"),
        (
            f"{SIGNAL_SECONDS} s before the time limit: checkpoint after the current step, requeue",
            f"--signal=USR1@{SIGNAL_SECONDS}",
        ),
        ("the restarted job appends to the same log", "--open-mode=append"),
        (None, f"--output={job.log_dir + '/' if job.log_dir else ''}{log}"),
    ]
    lines = [
        "#!/bin/bash",
        f"# vae fit{' + vae test' if job.test else ''} on {devices}. Written by:",
        f"#   {_comment(job.command)}",
    ]
    for comment, directive in sbatch:
        lines += ([f"# {comment}"] if comment else []) + [f"#SBATCH {directive}"]
    lines += [
        "",
        "set -euo pipefail",
        "# torch's CPU threads per task: the cores SLURM gave it, not every core of the node",
        "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
    ]
    lines += study.array_lines(job.grid, job.root) if job.grid else [f"ROOT={_q(job.root)}"]
    lines += ["", "ARGS=(", *(f"    {a}" for a in _args(job)), ")"]
    # without it a rank that died can leave the others waiting in a DDP collective until the
    # process group's timeout (NCCL; gloo notices a closed connection)
    srun = "srun --kill-on-bad-exit=1"
    lines += ["# a task that exits non-zero ends the job's other tasks: no rank waits for a dead one"]
    if not job.test:
        return "\n".join([*lines, f'{srun} {vae} fit "${{ARGS[@]}}"']) + "\n"
    lines += [
        "# the fit writes $DONE when it ends without a preemption: a requeued job then only tests",
        f'DONE="$ROOT/{study.DONE_FILE}"',
        "if [[ ! -f $DONE ]]; then",
        f'    {srun} {vae} fit "${{ARGS[@]}}" --preemption.done_file "$DONE"',
        "fi",
        "[[ -f $DONE ]] || exit 0  # preempted: the job is being requeued",
        "# the checkpoint with the best val/loss of this job's fit (its last.ckpt if none), same W&B run",
        f'{srun} {vae} test "${{ARGS[@]}}" --ckpt_path best',
    ]
    return "\n".join(lines) + "\n"


def _trainer_args(job: Job) -> list[str]:
    """The trainer flags every task of ``job`` gets from the script (the allocation's shape)."""
    accelerator = "gpu" if job.gpus_per_node else "cpu"
    devices = ["--trainer.devices", str(job.tasks_per_node), "--trainer.num_nodes", str(job.nodes)]
    return ["--trainer.accelerator", accelerator, *devices]


def _args(job: Job) -> list[str]:
    """The ``vae fit`` (and ``vae test``) arguments, one flag and value a line. The arguments after
    ``--`` come before the task's folder and swept values, so that those win."""
    args = [a for c in job.configs for a in ("--config", _q(c))]
    args += _trainer_args(job)
    lines = [f"{a} {b}" for a, b in zip(args[::2], args[1::2])]
    lines += [" ".join(_q(a) for a in job.fit_args)] if job.fit_args else []
    args = ["--trainer.default_root_dir", '"$ROOT"', *study.array_args(job.grid)]
    if job.wandb:  # W&B groups the runs of one submission and can compare them by tag
        if job.grid:
            args += ["--trainer.logger.init_args.name", '"${NAMES[$I]}"']
        args += [
            "--trainer.logger.init_args.group",
            _q(job.group or job.name),
            "--trainer.logger.init_args.job_type",
            "fit",
            "--trainer.logger.init_args.tags",
            '"${TAGS[$I]}"' if job.grid else _q("[slurm]"),
        ]
    return lines + [f"{a} {b}" for a, b in zip(args[::2], args[1::2])]


def _config_settings(configs: list[str], fit_args: list[str]) -> dict:
    """The trainer keys of the stacked YAML files that decide the job's shape (later files win)."""
    trainer: dict = {}
    for path in configs:
        if not Path(path).exists():
            raise UserError(f"config file {path!r} not found; pass the YAMLs you would give to `vae fit --config`.")
        trainer.update(read_config_file(path).get("trainer") or {})
    for flag, value in zip(fit_args, fit_args[1:]):  # `-- --trainer.precision 16-mixed` counts too
        if flag.startswith("--trainer.") and flag.count(".") == 1:
            trainer[flag.removeprefix("--trainer.")] = value
    return trainer


def _parser() -> argparse.ArgumentParser:
    from vae_lightning.cli.console import plain

    p = Parser(
        prog="vae slurm submit",
        description=plain(__doc__.split("\n\n")[0]),
        epilog="Arguments after `--` go to `vae fit` unchanged.",
    )
    p.add_argument("--config", action="append", required=True, help="YAML config, as for `vae fit` (repeatable)")
    p.add_argument("--nodes", type=int, default=1, help="number of nodes (trainer.num_nodes)")
    p.add_argument(
        "--gpus-per-node",
        type=int,
        default=None,
        help="GPUs per node = trainer.devices; 0 for a CPU job (default: the config's devices, or 1)",
    )
    p.add_argument(
        "--ntasks-per-node",
        type=int,
        default=None,
        help="tasks per node; must equal the GPUs per node (CPU jobs: the DDP processes per node)",
    )
    p.add_argument("--cpus-per-task", type=int, default=None, help="CPU cores per task (data loading, rendering)")
    p.add_argument("--time", help="time limit, e.g. 24:00:00; USR1 comes 120 s before it")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument(
        "--array",
        metavar="KEY=V1,V2,...",
        action="append",
        help="swept config key and values, e.g. model.init_args.beta=1,2,4,8; repeatable: one array "
        "task per combination, in runs/<study>/<key=value,...>/",
    )
    p.add_argument(
        "--seeds",
        metavar="S1,S2,...",
        help="one task per seed: it sets seed_everything (model init, sampling) and data.init_args.seed "
        "(data order); the test set stays the one data.init_args.split_seed picks",
    )
    p.add_argument(
        "--study",
        help="the study's name: tasks train in runs/<study>/..., W&B group = the name "
        "(default: trainer.default_root_dir and its folder name)",
    )
    p.add_argument(
        "--test",
        action="store_true",
        help="after the fit, `vae test` its best checkpoint (by val/loss; last.ckpt if none) in the "
        "same job and W&B run; a job requeued after the fit re-runs only the test",
    )
    p.add_argument("--job-name", help="default: the name of trainer.default_root_dir (the run's folder)")
    p.add_argument("--dry-run", action="store_true", help="print the script instead of submitting it")
    return p


def _seeds_joined(argv: list[str]) -> list[str]:
    """``--seeds -1,2`` as ``--seeds=-1,2``: argparse takes a value that begins with ``-`` and is
    not one number for an option ("expected one argument"); joined, the seeds' own check names it."""
    out = list(argv)
    for i in range(len(out) - 1):
        if out[i] == "--seeds" and re.match(r"-[\d.]", out[i + 1]):
            out[i : i + 2] = [f"--seeds={out[i + 1]}"]
            break  # argparse keeps the last --seeds; one join is enough to name a bad value
    return out


def job_from_args(argv: list[str]) -> tuple[Job, bool]:
    """Parse ``vae slurm submit`` arguments into a checked ``Job``; returns (job, dry_run)."""
    cut = argv.index("--") if "--" in argv else len(argv)
    opts, fit_args = _parser().parse_args(_seeds_joined(hyphenated(argv[:cut]))), argv[cut + 1 :]
    if opts.nodes < 1:
        raise UserError(f"--nodes must be >= 1, got {opts.nodes}.")
    trainer = _config_settings(opts.config, fit_args)
    devices, accelerator = trainer.get("devices"), str(trainer.get("accelerator", "auto"))
    gpus = opts.gpus_per_node
    if gpus is None:
        gpus = 0 if accelerator == "cpu" else devices if isinstance(devices, int) and devices > 0 else 1
    if gpus < 0:
        raise UserError(f"--gpus-per-node must be >= 0 (0: a CPU job), got {gpus}.")
    tasks = opts.ntasks_per_node if opts.ntasks_per_node is not None else max(gpus, 1)
    if tasks < 1 or (gpus and tasks != gpus):
        raise UserError(
            f"--ntasks-per-node {tasks} must equal --gpus-per-node {gpus}: Lightning runs one task per "
            "device; leave --ntasks-per-node out."
        )
    if not gpus and str(trainer.get("precision")) in ("16", "16-mixed"):
        raise UserError(
            f"trainer.precision={trainer['precision']} needs a CUDA GPU; use --gpus-per-node >= 1 or "
            "bf16-mixed on the CPU."
        )
    if opts.cpus_per_task is not None and opts.cpus_per_task < 1:
        raise UserError(f"--cpus-per-task must be >= 1, got {opts.cpus_per_task}.")
    for flag in ("time", "partition", "account", "job_name"):
        if getattr(opts, flag) is not None:
            _directive_value(flag.replace("_", "-"), getattr(opts, flag))
    if opts.study is not None:
        study.check_folder_name("--study", opts.study)
    grid = study.grid_from(opts.array, opts.seeds)
    root = f"runs/{opts.study}" if opts.study else str(trainer.get("default_root_dir") or "runs/default")
    logger = trainer.get("logger")
    wandb = isinstance(logger, dict) and "WandbLogger" in str(logger.get("class_path", ""))
    job = Job(
        configs=opts.config,
        nodes=opts.nodes,
        gpus_per_node=gpus,
        tasks_per_node=tasks,
        cpus_per_task=opts.cpus_per_task,
        time=opts.time,
        partition=opts.partition,
        account=opts.account,
        grid=grid,
        name=opts.job_name or job_name(opts.study or Path(root).name or "vae"),
        group=opts.study,
        root=root,
        wandb=wandb,
        test=opts.test,
        fit_args=fit_args,
        command=shlex.join(["vae", "slurm", "submit", *argv]),
    )
    return job, opts.dry_run


def submit(script: str) -> str:
    """Submit ``script`` with sbatch; returns the job id."""
    if shutil.which("sbatch") is None:
        raise UserError(
            "sbatch was not found on PATH; run this on a SLURM login node (or add --dry-run to print the script)."
        )
    # sbatch hands this environment to the job, and to every restart of it; a W&B service of
    # this process (set by a notebook or a test) must not be shared with the job
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    result = subprocess.run(["sbatch", "--parsable"], input=script, capture_output=True, text=True, env=env)
    if result.returncode:
        raise UserError(f"sbatch refused the job: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip().split(";")[0]


def _vae_command() -> str:
    """``vae`` if that is on PATH (sbatch passes PATH on to the job), else this interpreter."""
    import sys

    return "vae" if shutil.which("vae") else f"{shlex.quote(sys.executable)} -m vae_lightning"


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: vae slurm submit --config X.yaml [options] [--dry-run] [-- vae fit arguments]\n\n"
            "Run `vae slurm submit --help` for the options."
        )
        return
    if argv[0] != "submit":
        raise UserError(f"unknown slurm command {argv[0]!r}; use `vae slurm submit` (see `vae slurm submit --help`).")
    job, dry_run = job_from_args(argv[1:])
    check_output("trainer.default_root_dir", job.root, "dir")
    check_output("the SLURM log folder (the current directory)", os.getcwd(), "dir")  # --output is relative
    if not dry_run:
        study.check_size(job.grid)  # asks SLURM, so a --dry-run works where there is none; before the slow parse
    # the fit line as `vae fit` parses it, at every swept value: a misspelled key would fail every task
    from vae_lightning.cli.study_identity import check_grid

    check_grid([a for c in job.configs for a in ("--config", c)] + job.fit_args, job.grid, study.point_args)
    check_task_folders(job)
    script = render(job, _vae_command())
    if dry_run:
        print(script, end="")
        return
    print(submit(script))


def check_task_folders(job: Job) -> None:
    """A task folder that already holds a fit must hold the fit this job asks for: a job with
    ``--test`` skips a fit whose ``fit.done`` it finds and tests the old checkpoint, and a grid
    task's folder would mix two configs. Else one line naming the first differing key (a
    resubmission with a changed setting once re-tested the old fit and ended COMPLETED). Only
    folders that hold a saved config are resolved, so a first submission costs nothing."""
    if not (job.grid or job.test):
        return  # one plain fit: Lightning gives a second run of another config its own version folder
    from vae_lightning.cli.study_identity import first_difference, identity, resolve

    base = [a for c in job.configs for a in ("--config", c)] + _trainer_args(job) + job.fit_args
    for task in study.tasks(job.grid) if job.grid else [[]]:
        folder = Path(job.root) / study.folder(task) if task else Path(job.root)
        saved = sorted(folder.glob("checkpoints/*/vae_config.yaml"))
        if not saved:
            continue
        wanted = identity(resolve([*base, "--trainer.default_root_dir", str(folder), *study.point_args(task)]))
        for path in saved:
            key = first_difference(identity(read_config_file(str(path))), wanted)
            if key is not None:
                raise UserError(
                    f"task folder {str(folder)!r} holds a fit whose config differs at {key} "
                    f"({path.relative_to(folder)}), which this job would reuse; move that folder away or "
                    "submit under another --study. Nothing was submitted."
                )


def write_templates(directory: Path) -> None:
    """Render TEMPLATES into ``directory`` (the shipped ``slurm/*.sbatch``)."""
    for name, args in TEMPLATES.items():
        job, _ = job_from_args([*args, "--dry-run"])
        (directory / name).write_text(render(job))
