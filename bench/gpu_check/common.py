"""What the GPU-check runner and its sections share: the context, a section's result, Markdown
tables, and the cards' published HBM bandwidth (PERF.md section 5.1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# published peak HBM bandwidth, GB/s, by a substring of torch.cuda.get_device_name()
HBM_PEAK_GBS = {"H200": 4800.0, "H100 PCIe": 2000.0, "H100 NVL": 3900.0, "H100": 3350.0}


@dataclass
class Context:
    """``dry``: tiny sizes on CPU (Triton interpreted); ``device``: ``"cuda"`` or ``"cpu"``;
    ``work``: a scratch folder for this section; ``limit``: seconds it may take; ``card``: the
    GPU's name (empty on CPU)."""

    dry: bool
    device: str
    work: Path
    limit: float
    card: str = ""


@dataclass
class Result:
    """``status``: PASS, FAIL or SKIP; ``summary``: one line with the numbers; ``body``: the
    Markdown detail (tables, command lines, output tails)."""

    status: str
    summary: str
    body: str = ""


def hbm_peak_gbs(card: str) -> float | None:
    """The card's published HBM bandwidth in GB/s, or None when the name is not known."""
    for key, value in HBM_PEAK_GBS.items():
        if key in card:
            return value
    return None


def md_table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
