"""SAM-family per-slice inference on CPU: DB-SAM and SAM2-SGP (tiny and published sizes).

Baseline: Meta's SAM ViT-B (``segment_anything.sam_model_registry["vit_b"]``, random weights),
one 1024 x 1024 slice, image encoder + one box through the prompt encoder and mask decoder.
Rows (random weights; the numbers do not depend on them):

- ``db_sam_vit_b`` / ``db_sam_plus``: one slice, encoder with the adapter + one box
  (``db_sam_vit_b``: SE channel attention per stage; ``_block``: after every ViT block);
- ``sam2_sgp_hiera_s`` / ``_t``: one slice, 2-D path (encoder, support memory attention with
  k = 1 support encoded beforehand, pseudo-mask decoder, box, PMA decoder);
- ``..._3d``: the same inside a slice propagation with a full bank of 16 memories (plus the
  memory encoding of the slice's own prediction);
- ``*_tiny``: the CPU test presets (64 px).

Each row runs in its own process: time = median of ``--repeats`` after one warm-up (fp32,
``torch.inference_mode``, batch 1), peak = the process's peak RSS minus its RSS before the model
was built (weights + activations). Params: trainable / frozen as in fine-tuning.

    .venv/bin/python -m bench.sam_family             # all rows, median of 3 (minutes on CPU)
    .venv/bin/python -m bench.sam_family --quick     # tiny rows timed, published sizes counted
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

BASELINE = "sam_vit_b"
ROWS = {
    "sam_vit_b": ("baseline", {}),
    "db_sam_vit_b": ("db_sam", {}),
    "db_sam_vit_b_block": ("db_sam", {"channel_attention": "block"}),
    "db_sam_plus": ("db_sam", {}),
    "sam2_sgp_hiera_s": ("sgp", {}),
    "sam2_sgp_hiera_t": ("sgp", {}),
    "sam2_sgp_hiera_s_3d": ("sgp3d", {}),
    "db_sam_tiny": ("db_sam", {}),
    "sam2_sgp_tiny": ("sgp", {}),
}
TINY = ("db_sam_tiny", "sam2_sgp_tiny")


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    parser.add_argument("--quick", action="store_true", help="time the tiny rows only")
    parser.add_argument("--rows", nargs="*", default=None, help=f"subset of {list(ROWS)}")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--count-only", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args(args)
    if opts.worker:
        print(json.dumps(_run_row(opts.worker, opts.repeats, opts.count_only)))
        return
    rows = opts.rows or list(ROWS)
    results = {}
    for name in rows:
        count_only = opts.quick and name not in TINY
        cmd = [sys.executable, __file__, "--worker", name, "--repeats", str(opts.repeats)]
        out = subprocess.run(
            cmd + (["--count-only"] if count_only else []),
            capture_output=True,
            text=True,
            check=True,
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"# done {name}", file=sys.stderr, flush=True)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, fp32, batch 1, median of {opts.repeats}"
    )
    print(f"# ratios against {BASELINE} (Meta SAM ViT-B, 1024 px, one box)")
    head = f"{'config':<22}{'size':>6}{'s/slice':>10}{'x base':>8}{'peak MB':>9}"
    print(head + f"{'trainable M':>13}{'frozen M':>10}")
    base = results.get(BASELINE, {}).get("seconds")
    for name, r in results.items():
        sec = r.get("seconds")
        ratio = f"{sec / base:8.2f}" if sec and base else f"{'-':>8}"
        sec_s = f"{sec:10.3f}" if sec else f"{'-':>10}"
        peak = f"{r['peak_mb']:9.0f}" if r.get("peak_mb") else f"{'-':>9}"
        print(
            f"{name:<22}{r['size']:>6}{sec_s}{ratio}{peak}"
            f"{r['trainable'] / 1e6:13.3f}{r['frozen'] / 1e6:10.3f}"
        )


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _run_row(name: str, repeats: int, count_only: bool) -> dict:
    kind, options = ROWS[name]
    torch.manual_seed(0)
    before = _rss_mb()
    net = _net(name, kind, options)
    counts = {
        "trainable": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "frozen": sum(p.numel() for p in net.parameters() if not p.requires_grad),
        "size": getattr(net, "image_size", 1024),
    }
    if count_only:
        return counts
    step = _step(net, kind)
    with torch.inference_mode():
        step()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    return {**counts, "seconds": statistics.median(times), "peak_mb": peak}


def _net(name: str, kind: str, options: dict) -> torch.nn.Module:
    if kind == "baseline":
        from segment_anything import sam_model_registry

        sam = sam_model_registry["vit_b"]().eval()
        sam.image_encoder.requires_grad_(False)
        return sam
    if kind == "db_sam":
        from medseg.models import db_sam

        if name.endswith("tiny"):
            return db_sam.tiny(**options).eval()
        return getattr(db_sam, name.removesuffix("_block"))(**options).eval()
    from medseg.models import sam2_sgp

    preset = name.removesuffix("_3d")
    if name.endswith("tiny"):
        return sam2_sgp.tiny(**options).eval()
    return getattr(sam2_sgp, preset)(**options).eval()


def _step(net: torch.nn.Module, kind: str):
    """The timed per-slice call (inputs and supports prepared outside it)."""
    s = getattr(net, "image_size", 1024)
    if kind == "baseline":
        x, box = torch.rand(1, 3, s, s), torch.tensor([[100.0, 100.0, 600.0, 700.0]])

        def step() -> None:
            emb = net.image_encoder(x)
            sparse, dense = net.prompt_encoder(points=None, boxes=box, masks=None)
            net.mask_decoder(emb, net.prompt_encoder.get_dense_pe(), sparse, dense, False)

        return step
    if kind == "db_sam":
        x, box = torch.rand(1, 1, s, s), torch.tensor([[s * 0.1, s * 0.1, s * 0.6, s * 0.7]])
        return lambda: net(x, box)
    x = torch.rand(1, 1, s, s)
    mask = torch.zeros(1, 1, s, s)
    mask[..., s // 4 : s // 2, s // 4 : s // 2] = 1
    with torch.inference_mode():
        support = net.support_memory(net.encode_images(torch.rand(1, 1, s, s)), mask)
    if kind == "sgp":
        return lambda: net.predict(net.encode_images(x), support)
    with torch.inference_mode():  # a full bank: 16 memories (the same slice, for timing only)
        one = net.support_memory(net.encode_images(x), mask)
        bank = type(support)(one.memory.repeat(16, 1, 1, 1), one.pos.repeat(16, 1, 1, 1), None)

    def step3d() -> None:
        feats = net.encode_images(x)
        out = net.predict(feats, support, bank=bank)
        net._memory(feats, out["logits"], from_mask=False)

    return step3d


if __name__ == "__main__":
    main()
