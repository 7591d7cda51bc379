"""bnnopt.models: plain nn.Module model zoo (no quantization inside), registered in MODELS.

Every constructor takes ``num_classes``, ``in_channels`` and ``input_size`` (and
model-specific options) and validates them (ValueError naming the bad value)::

    from bnnopt.models import resnet20, load_pretrained
    model = load_pretrained(resnet20(), "shared/pretrained/resnet20-cifar10-fp.pth")
    MODELS.get("resnet20")(num_classes=10)       # the same constructor, by name
"""
from bnnopt.models.cifar_resnet import (  # noqa: F401  (importing registers the models)
    CifarResNet,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)
from bnnopt.models.pretrained import extract_state_dict, load_pretrained  # noqa: F401
