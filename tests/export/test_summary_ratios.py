"""``bnnopt summary FILE.bnnpk``: the file ratio and the parameter-storage ratio are two
different, separately named numbers, and each is what its definition says."""
import re

from bnnopt.cli.main import main
from bnnopt.export import export_packed, load_packed, packed_summary
from bnnopt.nn import QuantConfig, summary

RATIO = re.compile(r"(\d+(?:\.\d+)?)x\b")


def test_packed_summary_names_each_ratio(tmp_path, quantized, capsys):
    model = quantized("lenet5", {}, QuantConfig(), 0)
    path = tmp_path / "lenet.bnnpk"
    export_packed(model, path, {"model": "lenet5"})
    info = packed_summary(path)
    # the file ratio is what its definition says: whole files on disk
    assert info["compression"] == round(info["float32_state_dict_bytes"] / info["file_bytes"], 2)
    assert info["file_bytes"] == path.stat().st_size

    assert main(["summary", str(path)]) == 0
    text = capsys.readouterr().out
    assert "compression" not in text  # no unnamed ratio is left
    labelled = {}
    for line in text.splitlines():
        found = RATIO.findall(line.split(":", 1)[-1]) if "KiB" in line or "smaller" in line else []
        for value in found:
            if "file ratio" in line:
                labelled.setdefault("file", []).append(float(value))
            elif line.startswith("parameter storage"):
                labelled.setdefault("parameters", []).append(float(value))
            elif line.startswith("quantized layers:"):
                labelled.setdefault("quantized layers", []).append(float(value))
            else:
                raise AssertionError(f"unlabelled ratio in {line!r}")
    assert labelled["file"] == [info["compression"]]
    params = summary(load_packed(path)).compression  # the table describes the loaded model
    assert labelled["parameters"] == [round(params, 2)]
    assert labelled["parameters"][0] > labelled["file"][0]  # they differ, and are named apart
