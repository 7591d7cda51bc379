"""File sizes and CPU latency of ResNet-20 W1 as float32 state dict, .bnnpk, ONNX and QONNX.

    PYTHONPATH=src python bench/bench_export.py [--threads 1] [--rounds 15] [--out DIR]

The model: ResNet-20 (CIFAR-10), binarized as the ``ste`` method does (1-bit
DoReFa weights, first conv and classifier in float32), initialised from the
official FSG full-precision checkpoint when ``shared/pretrained`` is found
(sizes do not depend on the values; the ONNX logits are checked against
load_packed's either way). Prints two markdown tables and writes
``bench/results/export.json``.

Latency: :func:`bnnopt.export.bench.bench_latency` (float model, load_packed,
onnxruntime; interleaved rounds, medians, batch 1 and 64).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch


def build_model() -> tuple[torch.nn.Module, str]:
    from bnnopt.registry import METHODS, MODELS

    model = MODELS.get("resnet20")(num_classes=10)
    source = "random init"
    try:
        from bnnopt.models import load_pretrained
        from bnnopt.experiments.protocols import find_shared

        ckpt = find_shared() / "pretrained" / "resnet20-cifar10-fp.pth"
        if ckpt.exists():
            load_pretrained(model, ckpt)
            source = "official FSG FP checkpoint"
    except (ValueError, OSError):
        pass
    METHODS.get("ste")().prepare(model, {"keep_first": True, "keep_last": True})
    # Binarizing the FP network without fine-tuning leaves BatchNorm statistics that blow the
    # logits up to ~1e11; re-estimate them (cumulative average, 4 batches of N(0, 1) inputs,
    # the scale of normalised images) so that the logits are O(1)-O(10) as in a trained run.
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        for _ in range(4):
            model(torch.randn(64, 3, 32, 32, generator=gen))
    return model.eval(), source + ", BatchNorm statistics re-estimated on N(0, 1) inputs"


def main() -> None:
    from bnnopt.export import export_packed, packed_summary
    from bnnopt.export.bench import bench_latency, describe_bench
    from bnnopt.export.onnx_export import export_onnx, verify_graph

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, source = build_model()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        packed = tmp / "resnet20-w1.bnnpk"
        meta = {"model": "resnet20", "model_options": {"num_classes": 10},
                "data": {"in_channels": 3, "image_size": [32, 32]}}
        export_packed(model, packed, meta)
        sizes = {"float32 state dict (torch.save)": packed_summary(packed)["float32_state_dict_bytes"],
                 ".bnnpk (bnnopt packed)": packed.stat().st_size}
        checks = {}
        for label, kwargs in (("ONNX", {}), ("ONNX, BN folded", {"fold_bn": True}),
                              ("QONNX", {"qonnx": True}), ("QONNX, BN folded", {"qonnx": True, "fold_bn": True})):
            path = tmp / (label.replace(" ", "_").replace(",", "") + ".onnx")
            info = export_onnx(packed, path, **kwargs)
            checks[label] = verify_graph(packed, path, info, qonnx=kwargs.get("qonnx", False))["verified_with"]
            sizes[label] = path.stat().st_size
        bench = bench_latency(packed, rounds=args.rounds)
    base = sizes["float32 state dict (torch.save)"]
    print(f"ResNet-20 W1 ({source}; 1-bit DoReFa weights, first conv and fc float32)\n")
    print("| file | bytes | vs float32 state dict |\n|---|---:|---:|")
    for label, size in sizes.items():
        print(f"| {label} | {size:,} | {base / size:.2f}x smaller |" if size < base else
              f"| {label} | {size:,} | {size / base:.2f}x larger |" if size > base else
              f"| {label} | {size:,} | 1.00x |")
    print()
    for label, how in checks.items():
        print(f"{label}: {how}")
    print()
    print(describe_bench(bench))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").write_text(json.dumps({"model": "resnet20-w1", "init": source, "sizes": sizes,
                                                 "checks": checks, "latency": bench}, indent=2))
    print(f"\nwrote {out / 'export.json'}")


if __name__ == "__main__":
    main()
