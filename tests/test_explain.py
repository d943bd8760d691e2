"""Each piece of jsonargparse's message text that `explain` reads (cli/explain.py's PATTERNS) is
matched against a real jsonargparse error here, so a jsonargparse release that rewords one fails
this test by name instead of silently degrading a user's error message."""

import pytest

from vae_lightning.cli import explain
from vae_lightning.cli.lightning import VAECLI
from vae_lightning.errors import UserError

FILES = {"syntax.yaml": "a: [1,\n", "unknown.yaml": "trainer:\n  max_stepz: 3\n"}

# pattern name -> (vae fit arguments, the patterns the raw jsonargparse text must match, words of the sentence)
CASES = {
    "missing-config": (["--config", "{d}/nope.yaml"], ["missing_config"], ["nope.yaml", "does not exist"]),
    "yaml-syntax": (["--config", "{d}/syntax.yaml"], ["yaml"], ["syntax.yaml", "not valid YAML"]),
    "unknown-key": (["--config", "{d}/unknown.yaml"], ["unknown_key"], ["trainer.max_stepz", "trainer.max_steps"]),
    "unknown-flag": (["--foo", "3"], ["unknown_flag"], ["--foo"]),
    "unknown-init-arg": (
        ["--model.init_args.latnet_dim", "3"],
        ["unknown_init_arg", "owner", "key", "given", "nested_given"],
        ["latnet_dim", "latent_dim"],
    ),
    "bad-class-path": (
        ["--model", "vae_lightning.Nope"],
        ["bad_class_path", "not_importable"],
        ["model", "vae_lightning.Nope"],
    ),
    "wrong-type": (["--trainer.max_steps", "abc"], ["wrong_type", "key"], ["trainer.max_steps", "integer", "abc"]),
    "literal": (["--trainer.precision", "64-foo"], ["literal", "given"], ["trainer.precision", "bf16-mixed", "64-foo"]),
    "constructor": (["--model.init_args.latent_dim", "0"], ["constructed"], ["model.init_args.latent_dim", ">= 1"]),
    "scalar": (
        ["--model.init_args.optimizer.init_args.lr", "nan"],
        ["scalar", "key", "given"],
        ["model.init_args.optimizer.init_args.lr must be a number, got 'nan'"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_pattern_still_matches_jsonargparse_text(case, tmp_path, monkeypatch):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    args, patterns, words = CASES[case]
    raw = []
    original = explain.explain

    def record(err, *rest, **kwargs):
        raw.append(str(err))
        return original(err, *rest, **kwargs)

    monkeypatch.setattr(explain, "explain", record)
    argv = ["fit", *[a.format(d=tmp_path) for a in args], "--trainer.default_root_dir", str(tmp_path / "run")]
    with pytest.raises(UserError) as err:
        VAECLI(args=argv)
    assert raw, "the error did not go through explain()"
    for name in patterns:
        assert explain.PATTERNS[name].search(raw[-1]), f"jsonargparse no longer writes {name!r}: {raw[-1]!r}"
    sentence = str(err.value)
    assert "\n" not in sentence and all(w in sentence for w in words), sentence


def test_every_pattern_has_a_case():
    covered = {name for _, patterns, _ in CASES.values() for name in patterns}
    assert covered == set(explain.PATTERNS)
