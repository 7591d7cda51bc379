"""bnnopt.export: ship a trained binary / low-bit network as packed bits.

See docs/export_format.md for the file format.
"""
from bnnopt.export.bits import pack_codes, packed_nbytes, unpack_codes  # noqa: F401
from bnnopt.export.container import FORMAT_VERSION, ExportFormatError  # noqa: F401
