"""Nets produce the shapes they promise and refuse shapes they cannot take, in one sentence."""

import pytest
import torch

from vae_lightning.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 64, 64)])
@pytest.mark.parametrize("channels", [(16,), (16, 32), (8, 16, 16, 32)])
def test_conv_nets_round_trip_shapes(shape, channels):
    enc, dec = ConvEncoder(shape, 5, channels), ConvDecoder(shape, 5, channels)
    mu, logvar = enc(torch.zeros(2, *shape))
    assert mu.shape == logvar.shape == (2, 5)
    assert dec(mu).shape == (2, *shape)


@pytest.mark.parametrize("shape", [(1, 10, 7), (3, 20, 20)])
def test_mlp_nets_take_any_shape(shape):
    mu, _ = MLPEncoder(shape, 3)(torch.zeros(4, *shape))
    assert MLPDecoder(shape, 3)(mu).shape == (4, *shape)


@pytest.mark.parametrize("net", [ConvEncoder, ConvDecoder])
@pytest.mark.parametrize("shape", [(1, 100, 100), (3, 32, 64), (1, 48, 48)])
def test_conv_nets_name_the_unsupported_shape(net, shape):
    with pytest.raises(ValueError, match=r"got images of shape .* supports square images of 28, 32, 64 px"):
        net(shape, 4)


def test_conv_nets_refuse_too_many_layers_for_the_size():
    with pytest.raises(ValueError, match="5 stride-2 layers cannot handle 28 px"):
        ConvEncoder((1, 28, 28), 4, channels=(8, 8, 8, 8, 8))
