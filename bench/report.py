"""Tables (Markdown, printed and written to bench/results/) and the frontier chart."""

from __future__ import annotations

import datetime
from pathlib import Path

from PIL import Image, ImageDraw

from bench.sidebyside import CONCURRENT_CLIENTS as CLIENTS

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def table(headers: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def frontier_table(rows: list[dict], configs: dict, reference: str = "ort-defaults") -> str:
    ref = next((r for r in rows if r["name"] == reference and r.get("ok")), None)
    out = []
    for row in rows:
        settings = configs[row["name"]].settings_text()
        if not row.get("ok"):
            out.append([row["name"], settings] + ["-"] * 6 + [row.get("error", "failed")[:120]])
            continue
        mem_ratio = f"{row['hwm_mb'] / ref['hwm_mb']:.2f}x" if ref else "-"
        ratio = f"{row['vs_reference']:.2f}x" if row.get("vs_reference") else "-"
        out.append([row["name"], settings, ratio, row["median_s"], row["p95_s"], row["cpu_s"],
                    row["hwm_mb"], mem_ratio, "**frontier**" if row.get("pareto") else ""])
    headers = ["point", "settings", f"time vs {reference} (same minutes)", "median s", "p95 s",
               "CPU s/run", "peak RSS MB (VmHWM)", f"RSS vs {reference}", "note"]
    return table(headers, out)


def write_results(sections: list[tuple[str, str]], header: str) -> Path:
    """Write the run's sections to bench/results/<date>.md (a second run the same day
    gets <date>-2.md, so a record is never overwritten)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    path = RESULTS_DIR / f"{stamp}.md"
    counter = 2
    while path.exists():
        path = RESULTS_DIR / f"{stamp}-{counter}.md"
        counter += 1
    body = [header] + [f"## {title}\n\n{text}\n" for title, text in sections]
    path.write_text("\n".join(body))
    return path


def frontier_chart(rows: list[dict], path: Path, size=(900, 600)) -> Path:
    """Peak RSS (x) against time relative to onnxruntime's defaults measured in
    the same minutes (y), one labelled dot per point; red = Pareto frontier.

    Drawn with Pillow (a runtime dependency already), so no plotting library.
    """
    good = [row for row in rows if row.get("ok") and row.get("vs_reference")]
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 70, 30, size[0] - 30, size[1] - 60
    max_mb = max(row["hwm_mb"] for row in good) * 1.1
    max_ratio = max(row["vs_reference"] for row in good) * 1.1
    draw.rectangle((left, top, right, bottom), outline="black")
    for step in range(6):
        x = left + (right - left) * step / 5
        y = bottom - (bottom - top) * step / 5
        draw.text((x - 12, bottom + 8), f"{max_mb * step / 5:.0f}", fill="black")
        draw.text((10, y - 6), f"{max_ratio * step / 5:.2f}x", fill="black")
    draw.text(((left + right) // 2 - 60, bottom + 30), "peak RSS, VmHWM (MB)", fill="black")
    draw.text((10, 8), "median run / onnxruntime defaults' (same minutes)", fill="black")
    for row in good:
        x = left + (right - left) * row["hwm_mb"] / max_mb
        y = bottom - (bottom - top) * row["vs_reference"] / max_ratio
        colour = "red" if row.get("pareto") else "steelblue"
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
        draw.text((x + 6, y - 6), row["name"], fill=colour)
    image.save(path)
    return path


def side_by_side_table(result: dict) -> str:
    ours, theirs = result["servers"][result["ours"]], result["servers"][result["theirs"]]
    metrics = [
        ("median latency (s)", "median_s"), ("p95 latency (s)", "p95_s"),
        ("requests/s (one client)", "requests_per_s"),
        ("peak RSS, process tree, sum (MB)", "tree_peak_mb"),
        ("peak PSS, process tree (MB; shared pages once)", "tree_peak_pss_mb"),
        ("peak RSS, serving process VmHWM (MB)", "worker_hwm_mb"),
        ("idle RSS after start (MB)", "idle_mb"), ("RSS after the run (MB)", "after_mb"),
        ("start to first healthy answer (s)", "healthy_s"),
        ("start to first cut-out (s)", "first_cutout_s"),
        ("install size (MB)", "install_mb"),
        (f"requests/s, {CLIENTS} clients at once", "concurrent_requests_per_s"),
        (f"median latency, {CLIENTS} clients at once (s)", "concurrent_median_s"),
        (f"peak PSS, process tree, {CLIENTS} clients at once (MB)", "concurrent_tree_peak_pss_mb"),
    ]
    rows = [[label, ours[key], theirs[key], f"{ours[key] / theirs[key]:.2f}x"]
            for label, key in metrics if theirs.get(key)]
    rows.append(["requests measured", ours["requests"], theirs["requests"], ""])
    mean_iou = sum(result["iou"].values()) / len(result["iou"])
    rows.append(["mask IoU (alpha >= 128), mean of photos", f"{mean_iou:.4f}", "", ""])
    if "reference_iou" in result:
        rows.append(["rembg vs models/reference.py, lowest IoU of photos", "",
                     f"{min(result['reference_iou'].values()):.4f}", ""])
    text = table(["", result["ours"], result["theirs"], "ours / rembg"], rows)
    per_photo = ", ".join(f"{name} {iou:.4f}" for name, iou in result["iou"].items())
    note = " The memory guard replaced our worker during the run." \
        if ours.get("worker_recycled") else ""
    return f"{text}\n\nIoU per photo: {per_photo}.{note}"


def overhead_table(facts: dict) -> str:
    medians = facts["median_s"]
    rows = [
        ["worker VmHWM after start-up (MB)", facts["worker_hwm_idle_mb"]],
        ["worker VmHWM after one 1024-px request (MB)", facts["worker_hwm_one_request_mb"]],
        ["worker VmHWM after the whole section (MB)", facts["worker_hwm_end_mb"]],
        ["median /api/bg/remove through the service (s)", f"{medians['service']:.3f}"],
        ["median bare inference, service's session options (s)", f"{medians['bare']:.3f}"],
        ["median bare inference, onnxruntime defaults (s)", f"{medians['bare-ort-defaults']:.3f}"],
        ["service / bare ORT defaults (issue 14: <= 1.10x)",
         f"{medians['service'] / medians['bare-ort-defaults']:.3f}x"],
        ["service / bare, service's options", f"{facts['service_over_bare']:.3f}x"],
        ["ORT defaults / bare", f"{facts['ort_defaults_over_bare']:.3f}x"],
        ["bare session VmHWM, service options (MB)", facts["bare_hwm_mb"]],
        ["bare session VmHWM, ORT defaults (MB)", facts["bare_ort_defaults_hwm_mb"]],
    ]
    runs = ", ".join(f"{label} {count}" for label, count in facts["runs"].items())
    return table(["measure", "value"], rows) + f"\n\nTimed runs: {runs}."
