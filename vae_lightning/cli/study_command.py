"""``vae study run|submit|status``: the tasks of a study file, on this machine or as one SLURM array.

    vae study run configs/studies/locatello_mini.yaml --test
    vae study submit configs/studies/locatello_mini.yaml --test --dry-run
    vae study status runs/locatello_mini

Every task (entry x grid point x seed, see ``study_file``) trains in
``<root>/<entry>,<grid point>,seed=<s>-<hash>/``: the hash is that of the task's fully resolved
config (``study_identity``), so a changed config is a new folder and a new W&B run, and the same
config finds its finished work: ``run`` and ``submit`` skip finished tasks and resume interrupted
ones (from the folder's last checkpoint). A task folder whose saved config differs from the one
about to run is refused, naming the first differing key. ``<root>/study.json`` lists the tasks;
``status`` reads it and the folders.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vae_lightning.cli import slurm, study, study_file
from vae_lightning.cli.console import hyphenated
from vae_lightning.cli.study_folders import FINISHED_FILE, STARTS_FILE, STUDY_FILE, state
from vae_lightning.errors import UserError

TASK_FILE = "task.json"  # the task's identity, written before its first run


@dataclass
class Planned:
    task: study_file.Task
    hash: str
    identity: dict
    folder: Path
    wandb: bool

    @property
    def name(self) -> str:
        return f"{self.task.label}-{self.hash}"

    def record(self) -> dict:
        return {
            "entry": self.task.entry,
            "point": dict(self.task.point),
            "seed": self.task.seed,
            "hash": self.hash,
            "folder": self.folder.name,
            "argv": self.task.argv,
        }


def plan(spec: study_file.StudyFile, extra: list[str], root: Path, trainer: dict | None = None) -> list[Planned]:
    """Resolve every task's config (as ``vae fit`` would parse it) and check its folder; refuses,
    before anything is written, a folder whose saved config differs. ``trainer``: the trainer keys
    a job script sets for every task (``job_trainer``); they are checked against a saved run too,
    though, like the study's folders, they are not part of the task's hash."""
    from vae_lightning.cli.study_identity import identity, resolve, task_hash

    planned = []
    for task in study_file.tasks(spec, extra):
        try:
            config = resolve(task.argv)
        except UserError as err:
            raise UserError(f"study {spec.name!r}, task {task.label}: {err}") from None
        logger = (config.get("trainer") or {}).get("logger")
        wandb = isinstance(logger, dict) and "WandbLogger" in str(logger.get("class_path", ""))
        digest = task_hash(config)
        runs_as = identity(config)
        if trainer:
            runs_as["trainer"] = {**runs_as.get("trainer", {}), **trainer}
        item = Planned(task, digest, runs_as, root / f"{task.label}-{digest}"[:240], wandb)
        check_folder(item)
        planned.append(item)
    return planned


def check_folder(item: Planned) -> None:
    """A task folder must hold this task: its ``task.json`` (and the saved config of a fit in it)
    must equal the config about to run, else one line naming the first differing key."""
    from vae_lightning.cli.study_identity import first_difference, identity

    saved = []
    record = item.folder / TASK_FILE
    if record.is_file():
        saved.append((record, json.loads(record.read_text()).get("identity")))
    import yaml

    for config in sorted(item.folder.glob("checkpoints/*/vae_config.yaml")):
        saved.append((config, identity(yaml.safe_load(config.read_text()) or {})))
    for path, old in saved:
        key = first_difference(old, item.identity)
        if key is not None:
            raise UserError(
                f"task folder {str(item.folder)!r} holds a run whose config differs at {key} ({path.name}); "
                "move that folder away to rerun the task, nothing was started."
            )


def _logger_args(item: Planned, spec: study_file.StudyFile) -> list[str]:
    if not item.wandb:
        return []
    run_id = f"{slurm.job_name(spec.name)[:40]}-{item.hash}"  # the same id for every start of the task
    return [
        "--trainer.logger.init_args.id",
        run_id,
        "--trainer.logger.init_args.resume",
        "allow",
        "--trainer.logger.init_args.name",
        item.task.label,
        "--trainer.logger.init_args.group",
        spec.name,
        "--trainer.logger.init_args.job_type",
        item.task.entry,
        "--trainer.logger.init_args.tags",
        "[" + ", ".join(["study", item.task.entry, *study.short(item.task.point), f"seed={item.task.seed}"]) + "]",
    ]


def _write_json(path: Path, data: dict) -> None:
    from vae_lightning.runtime.atomic import atomic_open

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as fh:
        json.dump(data, fh, indent=1)


def _record(spec: study_file.StudyFile, planned: list[Planned], root: Path, command: list[str], job=None) -> None:
    """``study.json`` (every task of the file, the command) and each task's ``task.json``."""
    old = json.loads((root / STUDY_FILE).read_text()) if (root / STUDY_FILE).is_file() else {}
    jobs = old.get("jobs", []) + ([job] if job else [])
    _write_json(
        root / STUDY_FILE,
        {
            "name": spec.name,
            "file": spec.path,
            "command": command,
            "tasks": [p.record() for p in planned],
            "jobs": jobs,
        },
    )
    for item in planned:
        if not (item.folder / TASK_FILE).is_file():
            _write_json(item.folder / TASK_FILE, {**item.record(), "identity": item.identity})


def run_tasks(spec, planned: list[Planned], test: bool, root: Path, command: list[str], only=None) -> None:
    """Run the unfinished tasks (of ``--only``, if given) one after another in this process."""
    selected = _selected(planned, only)  # a bad --only is refused before anything is written
    _record(spec, planned, root, command)  # every task, so that `vae study status` still lists them all
    for n, item in enumerate(selected, 1):
        if state(item.folder) == "finished":
            print(f"[{n}/{len(selected)}] {item.name}: finished, skipped", flush=True)
            continue
        print(f"[{n}/{len(selected)}] {item.name}", flush=True)
        run_one(item.folder, [*item.task.argv, *_logger_args(item, spec)], test)


def _resume(folder: Path) -> list[str]:
    """Where an unfinished fit continues: the newer of SLURM's checkpoint (``hpc_ckpt_*``, written at
    a preemption, mid-epoch with the data order) and the last ``last.ckpt``; nothing for a new task."""
    from vae_lightning.runtime.checkpoint import find_last

    last = find_last(folder / "checkpoints")
    hpc = max((p.stat().st_mtime for p in folder.glob("hpc_ckpt_*.ckpt")), default=None)
    if hpc is not None and (last is None or hpc >= Path(last).stat().st_mtime):
        return ["--ckpt_path", "hpc"]
    return ["--ckpt_path", "last"] if last is not None else []


def run_one(folder: Path, args: list[str], test: bool) -> None:
    """One task in this process: its fit (resumed where it stopped; skipped once ``fit.done`` says it
    ended) and then its test, one Python start-up for both. When both are done the task is marked
    finished and SLURM's ``hpc_ckpt_*`` files are deleted (``last.ckpt`` and the best stay)."""
    import wandb

    from vae_lightning.cli import run

    zero = os.environ.get("SLURM_PROCID", "0") == "0"  # one record per task, not one per DDP rank
    folder.mkdir(parents=True, exist_ok=True)
    if zero:
        with open(folder / STARTS_FILE, "a") as fh:
            fh.write(f"{time.time():.3f}\n")
    args = [*args, "--trainer.default_root_dir", str(folder)]
    done = folder / study.DONE_FILE
    end = None
    try:
        if not done.is_file():
            run(["fit", *args, *_resume(folder), "--preemption.done_file", str(done)])
        if test and done.is_file():  # not after a preemption: the requeued job fits on, then tests
            run(["test", *args, "--ckpt_path", "best"])
        end = f"{time.time():.3f}" if done.is_file() else None
        if zero and wandb.run is not None:
            _log_task(wandb.run, folder, end)
    finally:
        wandb.finish()
        wandb.teardown()  # each task's W&B service ends with it
    if end is not None and zero:
        for path in folder.glob("hpc_ckpt_*.ckpt"):
            path.unlink()
        (folder / FINISHED_FILE).write_text(f"{end}\n")


def _log_task(wandb_run, folder: Path, end: str | None) -> None:
    """The task's record in its W&B run, for W&B to group and plot by and for `vae compare --wandb`
    to build the folders' report: ``study_task`` in the config (entry, grid point, seed, hash) and,
    once the task has ended at ``end``, in the summary its restarts, whole wall time and steps,
    as the folder's ``starts``, ``task.done`` and ``summary.json`` give them."""
    import yaml

    from vae_lightning.evaluation.compare import WANDB_TASK_KEY

    if not (folder / TASK_FILE).is_file():
        return  # a task run by hand (`vae study task`) without its study's record
    record = json.loads((folder / TASK_FILE).read_text())
    point = {k: yaml.safe_load(str(v)) for k, v in (record.get("point") or {}).items()}  # numbers W&B can plot
    task = {"entry": record.get("entry"), "point": point, "seed": record.get("seed"), "hash": record.get("hash")}
    wandb_run.config.update({WANDB_TASK_KEY: task}, allow_val_change=True)
    starts = [float(t) for t in (folder / STARTS_FILE).read_text().split()]
    summaries = sorted(folder.glob("checkpoints/*/summary.json"), key=lambda p: p.stat().st_mtime)
    if end is not None and starts:
        # the fit's steps as its folder counts them (W&B's logged trainer/global_step is 0 after a test)
        steps = json.loads(summaries[-1].read_text()).get("step") if summaries else None
        done = {"restarts": len(starts) - 1, "wall_time": float(end) - starts[0], "steps": steps}
        wandb_run.summary[WANDB_TASK_KEY] = done


def job_trainer(job: slurm.Job) -> dict:
    """The trainer keys the job script gives every task (the job's shape, one task per device), as
    ``vae fit`` parses them: ``devices`` stays the string it was given (its type is int | str | list)."""
    return {
        "accelerator": "gpu" if job.gpus_per_node else "cpu",
        "devices": str(job.tasks_per_node),
        "num_nodes": job.nodes,
    }


def render_study(job: slurm.Job, spec, planned: list[Planned], vae: str = "vae") -> str:
    """One heterogeneous array: task i runs ``planned[i]``'s own config stack, grid point and seed."""
    q = shlex.quote
    job.study_tasks = len(planned)
    root = str(planned[0].folder.parent)
    # the logs go to the study folder where an #SBATCH line can name it, else to the submit folder
    job.log_dir = root if slurm.DIRECTIVE_VALUE.fullmatch(root.replace("/", "")) else None
    header = slurm.render(job, vae).split("\nset -euo pipefail\n")[0]
    lines = [
        header,
        "set -euo pipefail",
        "# torch's CPU threads per task: the cores SLURM gave it, not every core of the node",
        "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
        "# array task i: the i-th task of the study (entry, grid point, seed), in the folder its config names",
        'case "$SLURM_ARRAY_TASK_ID" in',
    ]
    device = [a for key, value in job_trainer(job).items() for a in (f"--trainer.{key}", str(value))]
    for i, item in enumerate(planned):
        args = [*item.task.argv, *device, *_logger_args(item, spec)]  # `vae study task` adds the folder
        lines += [f"{i})  # {slurm._comment(item.task.label)}", f"    ROOT={q(str(item.folder))}", "    ARGS=("]
        lines += [f"        {' '.join(q(a) for a in pair)}" for pair in _pairs(args)]
        lines += ["    )", "    ;;"]
    lines += ['*) echo "no task $SLURM_ARRAY_TASK_ID in this study" >&2; exit 1 ;;', "esac"]
    lines += [
        "# fit (resumed where it stopped) and test in one process; a job requeued after its fit only tests;",
        "# a task that exits non-zero ends the job's other tasks: no rank waits for a dead one",
        f'srun --kill-on-bad-exit=1 {vae} study task --root "$ROOT"{" --test" if job.test else ""} -- "${{ARGS[@]}}"',
    ]
    return "\n".join(lines) + "\n"


def _pairs(args: list[str]) -> list[list[str]]:
    """Flags with their values, one per line of the script."""
    out: list[list[str]] = []
    for arg in args:
        if out and not arg.startswith("--") and len(out[-1]) == 1:
            out[-1].append(arg)
        else:
            out.append([arg])
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"{message} (see `vae study --help`).")


HELP = """usage: vae study run FILE [--root DIR] [--test] [--only HASH,...] [-- vae fit arguments]
       vae study submit FILE [vae slurm submit options] [--dry-run] [-- vae fit arguments]
       vae study status STUDY_DIR

A study file names the study and its entries; each entry is a config stack (the files you would
give `vae fit --config`) with its own grid, run for every seed of the study:

    name: locatello_mini
    seeds: [0, 1, 2]
    args: [--trainer.max_steps, "5000"]
    entries:
      - name: beta_vae
        config: [configs/base.yaml, configs/sprites/vae.yaml, configs/sprites/beta_vae.yaml]
        grid: {model.init_args.beta: [1, 2, 4, 6, 8, 16]}

A seed sets seed_everything (the model's init and the sampling) and data.init_args.seed (the data
order); the test set stays the one data.init_args.split_seed picks. Each task trains in
<root>/<entry>,<grid point>,seed=<s>-<hash> (root: runs/<name>), the hash that of its resolved
config: finished tasks are skipped, interrupted ones resume, a changed config is a new task.
`run` runs the tasks here one after another; `submit` submits one SLURM array of the unfinished
ones (the options of `vae slurm submit --help` apply); `status` prints one line per task.
"""


def _options(argv: list[str], submit: bool) -> tuple[argparse.Namespace, list[str]]:
    cut = argv.index("--") if "--" in argv else len(argv)
    p = _Parser(prog=f"vae study {'submit' if submit else 'run'}", add_help=False)
    p.add_argument("file")
    p.add_argument("--root")
    p.add_argument("--test", action="store_true")
    p.add_argument("--only", help="comma-separated task hashes: run just these")
    if submit:
        p.add_argument("--dry-run", action="store_true")
        for flag in ("--nodes", "--gpus-per-node", "--ntasks-per-node", "--cpus-per-task"):
            p.add_argument(flag)
        for flag in ("--time", "--partition", "--account", "--job-name"):
            p.add_argument(flag)
    return p.parse_args(hyphenated(argv[:cut])), argv[cut + 1 :]


def _selected(planned: list[Planned], only: str | None) -> list[Planned]:
    if not only:
        return planned
    wanted = {h.strip() for h in only.split(",") if h.strip()}
    unknown = wanted - {p.hash for p in planned}
    if unknown:
        raise UserError(
            f"--only {sorted(unknown)[0]!r} is no task of this study; copy the hashes from `vae study status`."
        )
    return [p for p in planned if p.hash in wanted]


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help") or (len(argv) > 1 and argv[1] in ("-h", "--help")):
        print(HELP)
        raise SystemExit(0)  # as argparse's --help does
    command, rest = argv[0], argv[1:]
    if command == "status":
        from vae_lightning.cli.study_status import main as status_main

        return status_main(rest)
    if command == "task":  # the job script's: one task in this process
        from vae_lightning.cli import console

        console.quiet(wandb=True)
        cut = rest.index("--") if "--" in rest else len(rest)
        p = _Parser(prog="vae study task", add_help=False)
        p.add_argument("--root", required=True)
        p.add_argument("--test", action="store_true")
        opts = p.parse_args(rest[:cut])
        return run_one(Path(opts.root), rest[cut + 1 :], opts.test)
    if command not in ("run", "submit"):
        raise UserError(f"unknown study command {command!r}; use run, submit or status (see `vae study --help`).")
    from vae_lightning.cli import console

    console.quiet(wandb=command == "run")
    opts, extra = _options(rest, command == "submit")
    spec = study_file.load(opts.file)
    root = Path(opts.root or f"runs/{spec.name}")
    from vae_lightning.runtime.outputs import check_output

    check_output("--root", str(root), "dir")
    typed = ["vae", "study", *argv]
    if command == "run":
        return run_tasks(spec, plan(spec, extra, root), opts.test, root, typed, opts.only)
    flags = [
        a
        for k, v in vars(opts).items()
        if k
        in ("nodes", "gpus_per_node", "ntasks_per_node", "cpus_per_task", "time", "partition", "account", "job_name")
        and v is not None
        for a in (f"--{k.replace('_', '-')}", v)
    ]
    first = [a for c in spec.entries[0].configs for a in ("--config", c)]  # the job's shape (devices)
    job, _ = slurm.job_from_args(
        [*first, *flags, "--study", spec.name, *(["--test"] if opts.test else []), "--", *extra]
    )
    job.command = shlex.join(typed)
    planned = plan(spec, extra, root, job_trainer(job))
    selected = _selected(planned, opts.only)
    todo = [p for p in selected if state(p.folder) != "finished"]
    for item in selected:
        mark = "finished, skipped" if item not in todo else f"task {todo.index(item)}"
        point = ",".join(f"{k}={v}" for k, v in item.task.point) or "-"
        line = f"{mark}: {item.task.entry} {point} seed={item.task.seed} -> {item.folder}"
        print(line, file=sys.stderr if not opts.dry_run else sys.stdout)
    if not todo:
        print(f"every task of study {spec.name!r} is finished; nothing to submit.")
        return
    script = render_study(job, spec, todo, slurm._vae_command())
    if opts.dry_run:
        print(script, end="")
        return
    study.check_size([("task", [str(i) for i in range(len(todo))])])
    made = not root.exists()
    root.mkdir(parents=True, exist_ok=True)  # SLURM writes the logs there
    try:
        job_id = slurm.submit(script)
    except UserError:
        if made:
            root.rmdir()  # refused: nothing left behind
        raise
    _record(spec, planned, root, typed, {"id": job_id, "tasks": [p.hash for p in todo]})
    print(job_id)
