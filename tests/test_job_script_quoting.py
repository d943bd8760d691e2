"""Nothing a user types is executed (issue 26, "A name reached the shell"): every value rendered into
a job script (study, job name, config paths, grid keys and values, pass-through arguments) is
quoted for the shell or refused, and study names and swept values that cannot be folder names are
refused. The fast tests read the script as the shell would tokenize it; the slow ones run it."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from helpers import unquoted
from vae_lightning.cli.slurm import job_from_args, render
from vae_lightning.errors import UserError

# each would create a file named `pwned` in the current folder if the shell ran it
HOSTILE = [
    "$(touch pwned)",
    "`touch pwned`",
    "'; touch pwned; '",
    '"; touch pwned; "',
    "a b;touch pwned",
    "x\ntouch pwned",
    "$'\\x41'$(touch pwned)",
    "${IFS}$(touch${IFS}pwned)",
]
# what may be a folder name: no newline (a control character); none of HOSTILE has a '/'
FOLDER_SAFE = [h for h in HOSTILE if h.isprintable()]


def test_the_reader_sees_what_is_outside_quotes():
    assert "pwned" not in unquoted("A='$(touch pwned)'\n# $(touch pwned)\n")
    assert "pwned" in unquoted('A="$(touch pwned)"\n')
    assert "pwned" in unquoted('A="\\"\'"$(touch pwned)\n')  # the ' inside "..." opens no quote
    assert "pwned" not in unquoted("A=''\"'\"'; touch pwned; '\"'\"''\n")  # shlex.quote's form
    assert "pwned" in unquoted("# a comment\ntouch pwned\n")
    assert "pwned" in unquoted("x=1 # $(touch\ntouch pwned\n")


def _configs(tmp_path: Path) -> list[str]:
    """A config file whose path holds each hostile name (a file name may hold any of them)."""
    paths = []
    for n, name in enumerate(HOSTILE):
        path = tmp_path / f"c{n}{name}.yaml"
        path.write_text("trainer:\n  max_steps: 1\n")
        paths.append(str(path))
    return paths


def _hostile_job(tmp_path: Path, study: str, test: bool = True):
    argv = [a for c in _configs(tmp_path) for a in ("--config", c)]
    argv += ["--gpus-per-node", "0", "--study", study, "--time", "1:00:00"]
    argv += ["--array", "model.init_args.beta=" + ",".join(v for v in FOLDER_SAFE)]
    argv += ["--seeds", "0,1", *(["--test"] if test else []), "--dry-run", "--"]
    argv += [a for h in HOSTILE for a in ("--trainer.logger.init_args.notes", h)]
    job, dry = job_from_args(argv)
    assert dry
    job.wandb = True  # the W&B lines (group, names, tags) are rendered too
    return job


@pytest.mark.parametrize("study", FOLDER_SAFE)
@pytest.mark.parametrize("test", [False, True])
def test_hostile_names_appear_only_inside_single_quotes(tmp_path, study, test):
    script = render(_hostile_job(tmp_path, study, test), vae="vae")
    exposed = unquoted(script)
    assert "pwned" not in exposed, [line for line in exposed.splitlines() if "pwned" in line]
    # and they are all there, in the quoted words
    assert shlex.quote(study) in script
    for value in FOLDER_SAFE:
        assert shlex.quote(value) in script
    assert " ".join(shlex.quote(a) for h in HOSTILE for a in ("--trainer.logger.init_args.notes", h)) in script
    # the header names the command, escaped on one comment line
    header = script.splitlines()[2]
    assert header.startswith("#   vae slurm submit ") and "x\\ntouch pwned" in header


@pytest.mark.parametrize(
    "args, words",
    [
        (["--study", "x\ntouch pwned"], "cannot be a folder name"),
        (["--study", "../escape"], "cannot be a folder name"),
        (["--study", ".."], "cannot be a folder name"),
        (["--study", "a/b"], "cannot be a folder name"),
        (["--array", "model.init_args.beta=../x"], "cannot be a folder name"),
        (["--array", "model.init_args.beta=.."], "cannot be a folder name"),
        (["--array", "model.init_args.beta=a\nb"], "cannot be a folder name"),
        (["--array", "config=configs/a.yaml,configs/b.yaml"], "vae study submit FILE"),
        (["--array", "model.init_args.beta=1,1"], "repeats a value"),
        (["--array", "model.$(touch pwned)=1"], "--array takes KEY=V1,V2"),
        (["--array", "model`touch pwned`=1"], "--array takes KEY=V1,V2"),
        (["--job-name", "$(touch pwned)"], "cannot go on an #SBATCH line"),
        (["--job-name", "a\n#SBATCH --wrap=touch pwned"], "cannot go on an #SBATCH line"),
        (["--partition", "debug --wrap=x"], "cannot go on an #SBATCH line"),
        (["--account", "a'b"], "cannot go on an #SBATCH line"),
        (["--time", "1:00\n#SBATCH --x"], "cannot go on an #SBATCH line"),
    ],
)
def test_names_that_cannot_be_folders_or_sbatch_values_are_refused(tmp_path, args, words):
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    with pytest.raises(UserError, match=words) as err:
        job_from_args(["--config", str(config), "--gpus-per-node", "0", *args, "--dry-run"])
    assert len(str(err.value).splitlines()) == 1  # one line: a newline in the value is shown escaped


def test_a_hostile_study_name_becomes_a_harmless_job_name_but_the_exact_wandb_group(tmp_path):
    job = _hostile_job(tmp_path, "$(touch pwned)")
    script = render(job)
    assert "#SBATCH --job-name=__touch_pwned_\n" in script
    assert "--trainer.logger.init_args.group '$(touch pwned)'\n" in script


# ---- the shell itself --------------------------------------------------------------------------

# srun as a shell function: it writes the arguments it was given, one per NUL, and runs nothing
FAKE_SRUN = 'srun() { printf "%s\\0" "$@" >>"$CALLS"; }; export -f srun; bash "$1"'


@pytest.mark.slow
@pytest.mark.parametrize("study", FOLDER_SAFE)
def test_bash_parses_the_script_and_running_it_executes_nothing_smuggled(tmp_path, study):
    job = _hostile_job(tmp_path, study)
    path = tmp_path / "job.sbatch"
    path.write_text(render(job, vae="vae"))
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    values = FOLDER_SAFE
    for task in range(2 * len(values)):
        calls = tmp_path / f"calls{task}"
        env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": str(task), "CALLS": str(calls)}
        done = Path(tmp_path / "runs" / study / f"model.init_args.beta={values[task // 2]},seed_everything={task % 2}")
        done.mkdir(parents=True, exist_ok=True)
        (done / "fit.done").write_text("1")  # the fit is done: the script goes on to the test
        run = subprocess.run(["bash", "-c", FAKE_SRUN, "bash", str(path)], cwd=tmp_path, env=env, capture_output=True)
        assert run.returncode == 0, run.stderr.decode()
        args = calls.read_bytes().decode().split("\0")[:-1]
        assert args[:3] == ["--kill-on-bad-exit=1", "vae", "test"]
        assert args[args.index("--trainer.default_root_dir") + 1] == f"runs/{study}/{done.name}"
        assert args[args.index("--model.init_args.beta") + 1] == values[task // 2]
        assert args[args.index("--trainer.logger.init_args.group") + 1] == study
        notes = [args[i + 1] for i, a in enumerate(args) if a == "--trainer.logger.init_args.notes"]
        assert notes == HOSTILE  # every pass-through argument arrives as it was typed
        assert [args[i + 1] for i, a in enumerate(args) if a == "--config"][: len(HOSTILE)] == job.configs
    assert not list(tmp_path.rglob("pwned")), "a name smuggled a command into the shell"
