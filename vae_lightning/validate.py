"""Checks that run before training, and one-sentence messages for jsonargparse's errors.

``explain(err)`` turns jsonargparse's nested, multi-line parse errors into one sentence that
names the key, the bad value and what is allowed. ``check_config`` looks at what the machine
can do (accelerator, devices, precision) and at the output folders before any class is built;
``check_built`` tries the optimizer and scheduler once the model exists.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import uuid
from pathlib import Path
from typing import Any

from vae_lightning.errors import UserError

_TYPE_WORDS = {
    "int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
    "collections.abc.Sequence": "a list", "list": "a list", "tuple": "a list", "dict": "a mapping",
}


# ---- parse errors ----------------------------------------------------------------------------


def explain(err: Exception, args: list[str] | None = None, known_keys: list[str] | None = None) -> str:
    """One sentence for a jsonargparse/constructor error. ``args`` (the command line) lets YAML
    syntax errors name their file; ``known_keys`` lets unknown keys get a suggestion."""
    text = str(err)
    cause = _constructor_error(err)
    if cause is not None:
        return _with_section(cause, text)
    m = re.search(r'Parser key "config":\s*File does not exist: (.*)', text)
    if m:
        return f"the --config file {m.group(1).strip()} does not exist; check the path."
    lines = [line.strip(" -") for line in text.splitlines() if line.strip(" -")]
    if text.startswith("Problems parsing config") or text.startswith("Unexpected config"):
        return _yaml_problem(args or [], text)
    m = re.search(r"does not accept option '([^']+)'", text)
    if m:
        return _unknown(m.group(1), known_keys or [])
    m = re.search(r"unrecognized arguments: (\S+)", text)
    if m:
        option = m.group(1).lstrip("-")
        return _unknown(option, known_keys or [], flag=True)
    key = _key_path(text)
    m = re.search(r"Option '([^']+)' is not accepted", text)
    if m:
        owner = re.search(r"class_path '([^']+)'", text)
        full = f"{key}.init_args.{m.group(1)}" if key else m.group(1)
        cls = owner.group(1) if owner else None
        return _unknown(full, _init_params(cls) if cls else [], owner=cls)
    m = re.search(r"Problem with given class_path '([^']+)':\s*\n\s*(module .*|No module named .*)", text)
    if m or "either not accessible or invalid" in text:
        bad = m.group(1) if m else _given(text)
        return f"{key}: cannot import the class {bad!r}; give a full import path such as vae_lightning.BetaVAE."
    m = re.search(r"Expected a (<class '([\w.]+)'>|([\w.]+)). Got value: (.*?)(?:\. Got value:|$)", text, re.M)
    if m:
        want = _TYPE_WORDS.get(m.group(2) or m.group(3), m.group(2) or m.group(3))
        return f"{key} must be {want}, got {m.group(4)!r}."
    literals = re.findall(r"Literal\[([^\]]*)\]", text)
    if literals:
        allowed = ", ".join(dict.fromkeys(v.strip() for group in literals for v in group.split(",")))
        return f"{key} must be one of {allowed}; got {_given(text)!r}."
    if key and _given(text) is not None:
        return f"{key}: invalid value {_given(text)!r} ({lines[0] if lines else 'see vae fit --help'})."
    return lines[-1] if lines else repr(err)


def _constructor_error(err: BaseException) -> str | None:
    """The innermost ValueError/TypeError raised by a constructor (ours or torch's), if any: it
    already is a sentence that names the value. Errors raised inside jsonargparse are skipped."""
    seen, found = set(), None
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (ValueError, TypeError)) and not _raised_in_jsonargparse(err):
            message = str(err).strip()
            if message and "\n" not in message:
                found = message
        err = err.__cause__ or err.__context__
    return found


def _with_section(message: str, text: str) -> str:
    """``latent_dim must be ...`` -> ``model.init_args.latent_dim must be ...`` when the word is
    an argument of the model or data class named in jsonargparse's message."""
    word = re.match(r"(\w+)", message)
    owner = re.search(r"Given value: Namespace\(class_path='([^']+)'", text)
    if not word or not owner or word.group(1) not in _init_params(owner.group(1)):
        return message
    from lightning.pytorch import LightningDataModule, LightningModule

    cls = _import_class(owner.group(1))
    section = "model" if isinstance(cls, type) and issubclass(cls, LightningModule) else (
        "data" if isinstance(cls, type) and issubclass(cls, LightningDataModule) else None)
    return f"{section}.init_args.{message}" if section else message


def _raised_in_jsonargparse(err: BaseException) -> bool:
    tb = err.__traceback__
    if tb is None:
        return True  # made and raised by jsonargparse's error collection, not by a constructor
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{os.sep}jsonargparse{os.sep}" in tb.tb_frame.f_code.co_filename


def _key_path(text: str) -> str:
    """``Parser key "model"`` ... ``Parser key "latent_dim"`` -> ``model.init_args.latent_dim``."""
    keys = re.findall(r'Parser key "([^"]+)"', text)
    return ".init_args.".join(keys)


def _given(text: str) -> str | None:
    m = re.search(r"^\s*Given value: (.*)$", text, re.M)
    if not m:
        return None
    value = m.group(1).strip()
    nested = re.fullmatch(r"NestedArg\(key='[^']*', val='(.*)'\)", value)
    return nested.group(1) if nested else value


def _unknown(key: str, known: list[str], owner: str | None = None, flag: bool = False) -> str:
    leaf = key.rsplit(".", 1)[-1]
    pool = known if known else []
    close = difflib.get_close_matches(key, pool, n=1) or difflib.get_close_matches(leaf, pool, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    where = f" of {owner}" if owner else ""
    what = f"unknown option --{key}" if flag else f"unknown key {key}{where}"
    return f"{what}{hint}; see `vae fit --help` for the accepted keys."


def _import_class(class_path: str):
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except Exception:
        return None


def _init_params(class_path: str) -> list[str]:
    """Constructor argument names of ``class_path`` and its bases (for suggestions)."""
    cls = _import_class(class_path)
    if cls is None:
        return []
    names: list[str] = []
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names:
                names.append(p.name)
    return names


def _yaml_problem(args: list[str], text: str) -> str:
    """Name the --config file whose YAML is broken (jsonargparse only says "<unicode string>")."""
    import yaml

    files = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    files += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for name in files:
        try:
            loaded = yaml.safe_load(Path(name).read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            return f"config file {name!r} is not valid YAML: {problem}{where}."
        except OSError:
            continue
        if loaded is not None and not isinstance(loaded, dict):
            return (f"config file {name!r} must hold a mapping of keys (trainer:, model:, data:, ...), "
                    f"not a {type(loaded).__name__}.")
    first = text.splitlines()[0]
    return f"a config could not be read as YAML ({first}); check the file given to --config."


# ---- checks before anything is built --------------------------------------------------------


def _get(ns: Any, dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if ns is None:
            return default
        ns = ns.get(part) if hasattr(ns, "get") else getattr(ns, part, None)
    return default if ns is None else ns


def check_config(config: Any, subcommand: str) -> None:
    """Refuse, before any class is built, what this machine cannot run or where it cannot write."""
    check_hardware(_get(config, "trainer.accelerator", "auto"), _get(config, "trainer.devices", "auto"),
                   _get(config, "trainer.precision"))
    check_writable("trainer.default_root_dir", _get(config, "trainer.default_root_dir"))
    check_writable("checkpoint.dirpath", _get(config, "checkpoint.dirpath"))
    clip = _get(config, "trainer.gradient_clip_val")
    if isinstance(clip, (int, float)) and clip < 0:
        raise UserError(f"trainer.gradient_clip_val must be >= 0 (or null for no clipping), got {clip}.")
    lr = _get(config, "model.init_args.optimizer.init_args.lr")
    if isinstance(lr, (int, float)) and not lr > 0:
        raise UserError(f"model.init_args.optimizer.init_args.lr must be > 0, got {lr}.")


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_hardware(accelerator: Any, devices: Any, precision: Any) -> None:
    """Accelerator, device count and precision must exist here (Lightning would fail later, or
    oversubscribe the CPU, with a long traceback)."""
    import torch

    if not isinstance(accelerator, str):
        return  # an Accelerator object from YAML: Lightning checks it
    acc = accelerator.lower()
    cuda = torch.cuda.is_available()
    if acc in ("gpu", "cuda") and not cuda:
        raise UserError(f"trainer.accelerator is {accelerator!r} but this machine has no CUDA GPU; use accelerator: cpu (or auto).")
    if acc == "mps" and not torch.backends.mps.is_available():
        raise UserError("trainer.accelerator is 'mps' but Apple's MPS is not available here; use accelerator: cpu (or auto).")
    if acc not in ("auto", "cpu", "gpu", "cuda", "mps"):
        raise UserError(f"trainer.accelerator {accelerator!r} is not available here; use auto, cpu or gpu.")
    on_gpu = acc in ("gpu", "cuda") or (acc == "auto" and cuda)
    count = _device_count(devices)
    if count is not None:
        have, kind = (torch.cuda.device_count(), "CUDA GPUs") if on_gpu else (_cpu_cores(), "CPU cores")
        if count > have:
            raise UserError(
                f"trainer.devices={devices} asks for {count} {'GPUs' if on_gpu else 'CPU processes'} but this machine "
                f"has {have} {kind}; use devices: {have} or fewer (or auto)."
            )
    prec = str(precision) if precision is not None else ""
    if prec.startswith("bf16") and on_gpu and not torch.cuda.is_bf16_supported():
        raise UserError(f"trainer.precision={prec} needs a GPU with bfloat16 support; use 16-mixed or 32-true here.")
    if prec.startswith("transformer-engine"):
        raise UserError(f"trainer.precision={prec} needs NVIDIA Transformer Engine, which vae does not support; use bf16-mixed or 32-true.")


def _device_count(devices: Any) -> int | None:
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1", ""):
            return None
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        if not text.lstrip("-").isdigit():
            raise UserError(f"trainer.devices must be a number, a list of device ids or auto, got {devices!r}.")
        devices = int(text)
    if isinstance(devices, int):
        if devices == -1:
            return None
        if devices < 1:
            raise UserError(f"trainer.devices must be >= 1 (or -1 / auto for all), got {devices}.")
        return devices
    return None


def check_writable(key: str, folder: Any) -> None:
    """``folder`` exists or can be made, and a file can be written in it."""
    if not folder or "://" in str(folder):
        return  # remote file systems are checked by fsspec when they are used
    path = Path(str(folder)).expanduser()
    probe = path / f".vae-write-test-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"{key} {str(folder)!r} cannot be written ({err.strerror or err}); choose a folder you can write to.") from None


def check_built(model: Any, subcommand: str, trainer: Any = None) -> None:
    """Build the optimizer and LR scheduler once on the real parameters, so that their bad
    arguments (torch checks them in their constructors) are reported before training; refuse
    the trainer settings a manually optimized model (FactorVAE) cannot apply."""
    if subcommand != "fit" or not hasattr(model, "configure_optimizers"):
        return
    if trainer is not None and not getattr(model, "automatic_optimization", True):
        for key, value, neutral in (("gradient_clip_val", trainer.gradient_clip_val, (None, 0)),
                                    ("accumulate_grad_batches", trainer.accumulate_grad_batches, (1,))):
            if value not in neutral:
                raise UserError(f"{type(model).__name__} steps its optimizers by hand (manual optimization) and "
                                f"cannot apply trainer.{key}={value}; remove it.")
    try:
        model.configure_optimizers()
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(f"model.init_args.optimizer or lr_scheduler refused by torch: {str(err).strip().splitlines()[0]}.") from None
