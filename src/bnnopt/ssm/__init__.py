"""bnnopt.ssm: a pure-PyTorch Mamba block (selective state-space model) and its scans.

FSG's slow-net runs on it; nothing here knows about quantization.
"""
from bnnopt.ssm.mamba import Mamba  # noqa: F401
from bnnopt.ssm.scan import selective_scan, selective_scan_ref  # noqa: F401
