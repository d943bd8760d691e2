"""vae-lightning: Variational Autoencoders with Lightning, from YAML.

The public classes are importable from here, e.g. ``vae_lightning.VAE``; imports are lazy so
that ``vae --help`` does not pay for torch and lightning.

Layout: the core (``models``, ``objectives``, ``nets``, ``likelihoods``, ``data``, ``errors``) is
flat; ``cli/`` is the ``vae`` command, ``callbacks/`` every Lightning callback, ``evaluation/`` the
metrics and pictures, ``runtime/`` checkpoint IO, atomic writes, the W&B guard and the one
module that touches private Lightning/W&B attributes (``runtime.compat``). See docs/architecture.md.
"""

from importlib import import_module

__all__ = [
    "DIPVAE",
    "IWAE",
    "VAE",
    "Bernoulli",
    "BetaTCVAE",
    "BetaVAE",
    "Constant",
    "ConvDecoder",
    "ConvEncoder",
    "Cyclical",
    "FactorVAE",
    "ForwardRecord",
    "FreeBitsVAE",
    "Gaussian",
    "HierarchicalVAE",
    "LearnedGaussian",
    "LinearWarmup",
    "MLPDecoder",
    "MLPEncoder",
    "MixtureOfGaussians",
    "Objective",
    "PixelCNNDecoder",
    "StandardNormal",
    "VampPrior",
    "load_model",
]

_WHERE = {
    **dict.fromkeys(["VAE", "ForwardRecord"], "vae_lightning.models"),
    **dict.fromkeys(["BetaVAE", "FreeBitsVAE", "BetaTCVAE", "FactorVAE", "DIPVAE", "IWAE"], "vae_lightning.variants"),
    "HierarchicalVAE": "vae_lightning.hierarchical",
    **dict.fromkeys(
        ["MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "PixelCNNDecoder"], "vae_lightning.nets"
    ),
    **dict.fromkeys(["Bernoulli", "Gaussian", "LearnedGaussian"], "vae_lightning.likelihoods"),
    **dict.fromkeys(["StandardNormal", "MixtureOfGaussians", "VampPrior"], "vae_lightning.priors"),
    **dict.fromkeys(["Constant", "LinearWarmup", "Cyclical", "Objective"], "vae_lightning.objectives"),
    "load_model": "vae_lightning.runtime.checkpoint",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vae_lightning' has no attribute {name!r}")
