"""One-sentence messages for jsonargparse's errors.

``explain(err)`` turns jsonargparse's nested, multi-line parse errors into one sentence that
names the key, the bad value and what is allowed. A constructor of ours refuses a value with a
``UserError``, already such a sentence, which is passed through; the rest is read from
jsonargparse's message text, which has no structured form. Each pattern read here has a test in
``tests/test_explain.py`` that feeds it a real jsonargparse error, so a jsonargparse release
that rewords one fails there, not silently at a user. Checks of values that do not need
jsonargparse's text live in ``vae_lightning.cli.preflight``.
"""

from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path

from vae_lightning.errors import UserError
from vae_lightning.runtime.imports import locate

_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "collections.abc.Sequence": "a list",
    "list": "a list",
    "tuple": "a list",
    "dict": "a mapping",
}

#: every piece of jsonargparse's (4.53.0) message text that ``explain`` reads; each one is
#: matched against a real jsonargparse error in tests/test_explain.py
PATTERNS = {
    "missing_config": re.compile(r'Parser key "config":\s*File does not exist: (.*)'),
    "yaml": re.compile(r"^(Problems parsing config|Unexpected config)"),
    "unknown_key": re.compile(r"does not accept option '([^']+)'"),
    "unknown_flag": re.compile(r"unrecognized arguments: (\S+)"),
    "unknown_init_arg": re.compile(r"Option '([^']+)' is not accepted"),
    "owner": re.compile(r"class_path '([^']+)'"),
    "bad_class_path": re.compile(r"Problem with given class_path '([^']+)':\s*\n\s*(module .*|No module named .*)"),
    "not_importable": re.compile(r"either not accessible or invalid"),
    "wrong_type": re.compile(r"Expected a (<class '([\w.]+)'>|([\w.]+)). Got value: (.*?)(?:\. Got value:|$)", re.M),
    "literal": re.compile(r"Literal\[([^\]]*)\]"),
    "key": re.compile(r'Parser key "([^"]+)"'),
    "given": re.compile(r"^\s*Given value: (.*)$", re.M),
    "nested_given": re.compile(r"NestedArg\(key='[^']*', val='(.*)'\)"),
    "constructed": re.compile(r"Given value: Namespace\(class_path='([^']+)'"),
    # a number inside a class's arguments (the optimizer's lr) that jsonargparse cannot read ('nan')
    "scalar": re.compile(r"- Expected a <class '(int|float|bool)'>"),
}


# ---- parse errors ----------------------------------------------------------------------------


def explain(err: Exception, args: list[str] | None = None, known_keys: list[str] | None = None) -> str:
    """One sentence for a jsonargparse/constructor error. ``args`` (the command line) lets YAML
    syntax errors name their file; ``known_keys`` lets unknown keys get a suggestion."""
    text = str(err)
    cause = _constructor_error(err)
    if cause is not None:
        return _with_section(cause, text)
    owner = PATTERNS["constructed"].search(text)
    foreign = _foreign_cause(err)
    if owner and foreign is not None:  # not jsonargparse's dump of every argument of the class
        return _not_built(owner.group(1), foreign)
    m = PATTERNS["missing_config"].search(text)
    if m:
        return f"the --config file {m.group(1).strip()} does not exist; check the path."
    lines = [line.strip(" -") for line in text.splitlines() if line.strip(" -")]
    if PATTERNS["yaml"].search(text):
        return yaml_problem(args or [], text)
    m = PATTERNS["unknown_key"].search(text)
    if m:
        return _unknown(m.group(1), known_keys or [])
    m = PATTERNS["unknown_flag"].search(text)
    if m:
        option = m.group(1).lstrip("-")
        return _unknown(option, known_keys or [], flag=True)
    key = _key_path(text)
    m = PATTERNS["unknown_init_arg"].search(text)
    if m:
        owner = PATTERNS["owner"].search(text)
        full = f"{key}.init_args.{m.group(1)}" if key else m.group(1)
        cls = owner.group(1) if owner else None
        return _unknown(full, _init_params(cls) if cls else [], owner=cls)
    scalars = PATTERNS["scalar"].findall(text)
    if scalars and key and _given(text) is not None and not PATTERNS["literal"].search(text):  # choices say more
        want = "float" if "float" in scalars else scalars[0]  # int | float takes any number
        return f"{key} must be {_TYPE_WORDS[want]}, got {_given(text)!r}."
    m = PATTERNS["bad_class_path"].search(text)
    if m or PATTERNS["not_importable"].search(text):
        bad = m.group(1) if m else _given(text)
        return f"{key}: cannot import the class {bad!r}; give a full import path such as vae_lightning.BetaVAE."
    m = PATTERNS["wrong_type"].search(text)
    if m:
        want = _TYPE_WORDS.get(m.group(2) or m.group(3), m.group(2) or m.group(3))
        return f"{key} must be {want}, got {m.group(4)!r}."
    literals = PATTERNS["literal"].findall(text)
    if literals:
        allowed = ", ".join(dict.fromkeys(v.strip() for group in literals for v in group.split(",")))
        return f"{key} must be one of {allowed}; got {_given(text)!r}."
    if key and _given(text) is not None:
        return f"{key}: invalid value {_given(text)!r} ({lines[0] if lines else 'see vae fit --help'})."
    return lines[-1] if lines else repr(err)


def _constructor_error(err: BaseException) -> str | None:
    """The innermost ``UserError`` in the chain: a constructor of ours refused a value, and its
    message already is a sentence that names it."""
    seen, found = set(), None
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, UserError):
            message = str(err).strip()
            if message and "\n" not in message:
                found = message
        err = err.__cause__ or err.__context__
    return found


def _foreign_cause(err: BaseException) -> BaseException | None:
    """The innermost exception under jsonargparse's, when a constructor failed with another
    library's error (torch's "negative dimension"); None when jsonargparse's own check failed."""
    seen, inner = {id(err)}, None
    cause = err.__cause__ or err.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        inner, cause = cause, cause.__cause__ or cause.__context__
    if inner is None or type(inner).__module__.startswith("jsonargparse") or not str(inner).strip():
        return None
    return inner


def _not_built(class_path: str, cause: BaseException) -> str:
    first = str(cause).strip().splitlines()[0].rstrip(".")
    section = _section(class_path)
    where = f"{section} " if section else ""
    hint = f" (`vae fit --{section}.help {class_path}` lists them)" if section else ""
    return f"{where}{class_path} could not be built: {first}; check its init_args{hint}."


def _section(class_path: str) -> str | None:
    """``model`` or ``data`` for a LightningModule or LightningDataModule class, else None."""
    from lightning.pytorch import LightningDataModule, LightningModule

    cls = locate(class_path)
    if not isinstance(cls, type):
        return None
    return "model" if issubclass(cls, LightningModule) else "data" if issubclass(cls, LightningDataModule) else None


def _with_section(message: str, text: str) -> str:
    """``latent_dim must be ...`` -> ``model.init_args.latent_dim must be ...`` when the word is
    an argument of the model or data class named in jsonargparse's message."""
    word = re.match(r"(\w+)", message)
    owner = PATTERNS["constructed"].search(text)
    if not word or not owner or word.group(1) not in _init_params(owner.group(1)):
        return message
    section = _section(owner.group(1))
    return f"{section}.init_args.{message}" if section else message


def _key_path(text: str) -> str:
    """``Parser key "model"`` ... ``Parser key "latent_dim"`` -> ``model.init_args.latent_dim``."""
    keys = PATTERNS["key"].findall(text)
    return ".init_args.".join(keys)


def _given(text: str) -> str | None:
    m = PATTERNS["given"].search(text)
    if not m:
        return None
    value = m.group(1).strip().split(". Got value: ")[0]  # not the dump of the class it belongs to
    nested = PATTERNS["nested_given"].fullmatch(value)
    return nested.group(1) if nested else value


def _unknown(key: str, known: list[str], owner: str | None = None, flag: bool = False) -> str:
    leaf = key.rsplit(".", 1)[-1]
    pool = known if known else []
    close = difflib.get_close_matches(key, pool, n=1) or difflib.get_close_matches(leaf, pool, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    where = f" of {owner}" if owner else ""
    what = f"unknown option --{key}" if flag else f"unknown key {key}{where}"
    return f"{what}{hint}; see `vae fit --help` for the accepted keys."


def _init_params(class_path: str) -> list[str]:
    """Constructor argument names of ``class_path`` and its bases (for suggestions)."""
    cls = locate(class_path)
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


def yaml_problem(args: list[str], text: str) -> str:
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
            return (
                f"config file {name!r} must hold a mapping of keys (trainer:, model:, data:, ...), "
                f"not a {type(loaded).__name__}."
            )
    first = text.splitlines()[0]
    return f"a config could not be read as YAML ({first}); check the file given to --config."
