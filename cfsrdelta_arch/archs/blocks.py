"""Building blocks shared by the refiners (not a network: nothing here is registered)."""
from torch import nn


def residual_conv_body(in_ch, width, out_ch, num_convs, init_std):
    """``num_convs`` 3x3 convs (in_ch -> width -> ... -> width -> out_ch) with ReLU between them.

    The last conv starts at weight N(0, init_std) and bias 0, so a refiner that adds this body's
    output to its input starts (almost exactly) as the identity. Layers are numbered as in an
    ``nn.Sequential`` (body.0, body.2, ...), the checkpoint names of the prior art's RefineNet.
    """
    if num_convs < 2:
        raise ValueError(f'num_convs must be >= 2, got {num_convs}')
    chans = [in_ch] + [width] * (num_convs - 1) + [out_ch]
    layers = []
    for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
        layers.append(nn.Conv2d(cin, cout, 3, padding=1))
        if i < num_convs - 1:
            layers.append(nn.ReLU(inplace=True))
    body = nn.Sequential(*layers)
    nn.init.normal_(body[-1].weight, 0.0, init_std)
    nn.init.zeros_(body[-1].bias)
    return body
