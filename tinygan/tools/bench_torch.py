"""The benchmark's PyTorch side-by-side (``python -m tinygan.bench --torch PYTHON``).

tinygan never imports torch: an interpreter that has it runs ``benchmarks/torch_ref/bench.py`` of the
source tree, which times the same BEGAN and MLP GAN steps and prints one JSON line per configuration.

On a shared machine only figures taken close together compare, and even then the machine drifts (the
same step moves by 15% over minutes here). So with ``--rounds R`` the benchmark alternates: round 0
times tinygan then PyTorch, round 1 PyTorch then tinygan, and so on (A B B A ...: a drift that is
linear in time enters both sides alike). Each round gives a ratio per configuration, tinygan's
median s/step over PyTorch's of the same round; the table reports the median of those ratios and
their range, which shows how far one run of the pair can be trusted.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess

#: PyTorch's configuration (benchmarks/torch_ref/bench.py: name, image size, n) -> ours
TORCH_NAMES = {("began", 32, 32): "began32_n32", ("began", 64, 64): "began64_n64",
               ("began", 64, 128): "began64_n128", ("mlp_gan", 28, 256): "mlp_mnist"}
TORCH_REF = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "benchmarks", "torch_ref")


def reference_configs(names):
    """The reference script's ``--configs`` argument for our configuration names (those it has)."""
    return ",".join(f"{kind}:{size}:{n}" for (kind, size, n), ours in TORCH_NAMES.items() if ours in names)


def torch_reference(python, threads, steps, warmup, ref=TORCH_REF, configs=None):
    """PyTorch's s/step for our configurations ({name: s_med}), timed by ``python`` (an interpreter
    with torch) running the reference script at ``threads`` threads; ``configs``: the script's
    ``--configs`` selection (default: all it has). One clear error if it cannot."""
    script = os.path.join(ref, "bench.py")
    if not os.path.isfile(script):
        raise RuntimeError(f"--torch: the PyTorch reference {script} is not here (it ships with the source "
                           "tree: run the benchmark from a clone of tinygan)")
    cmd = [python, script, "--threads", str(threads), "--steps", str(steps), "--warmup", str(warmup)]
    if configs:
        cmd += ["--configs", configs]
    try:
        done = subprocess.run(cmd, cwd=ref, capture_output=True, text=True)
    except OSError as e:
        raise RuntimeError(f"--torch: cannot run {python!r} ({e.strerror}): give the python of a "
                           "virtual environment with torch installed") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"--torch: {python} {script} failed: {last}")
    out = {}
    for line in done.stdout.splitlines():
        if not line.startswith("{"):
            continue  # anything else the script or torch prints
        try:
            row = json.loads(line)
        except ValueError:
            raise RuntimeError(f"--torch: {script} printed a line that is not JSON: {line[:80]!r}") from None
        name = TORCH_NAMES.get((row.get("config"), row.get("image_size"), row.get("n")))
        if name is not None:
            out[name] = row["s_med"]
    return out


def round_robin(rounds, time_ours, time_torch):
    """Alternate ``time_ours()`` and ``time_torch()`` (each: {config: s/step}) over ``rounds`` rounds,
    A B, B A, A B, ...; returns the two lists of per-round dicts, in round order."""
    ours, theirs = [], []
    for r in range(rounds):
        if r % 2 == 0:
            ours.append(time_ours(r))
            theirs.append(time_torch(r))
        else:
            theirs.append(time_torch(r))
            ours.append(time_ours(r))
    return ours, theirs


def compare(ours, theirs):
    """Per configuration timed on both sides in every round: medians of each side's s/step and of the
    per-round ratios, with the ratios' range. ``ours``/``theirs``: lists of per-round {config: s}."""
    out = {}
    for name in ours[0]:
        pairs = [(o[name], t[name]) for o, t in zip(ours, theirs) if name in o and name in t]
        if len(pairs) != len(ours):
            continue
        ratios = [o / t for o, t in pairs]
        out[name] = dict(ours_s=statistics.median(o for o, _ in pairs),
                         torch_s=statistics.median(t for _, t in pairs),
                         ratio=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
                         rounds=len(pairs))
    return out


def table(cmp, threads):
    rounds = max((c["rounds"] for c in cmp.values()), default=1)
    lines = [f"\nSide by side with PyTorch, same step, same run (threads: {threads or 'default'}; "
             f"{rounds} round{'s' if rounds > 1 else ''}, alternating):",
             f"{'config':<14}{'tinygan s':>11}{'PyTorch s':>11}{'ratio':>8}" + ("  ratio per round" if rounds > 1 else "")]
    for name, c in cmp.items():
        spread = f"  {c['ratio_min']:.2f} - {c['ratio_max']:.2f}" if c["rounds"] > 1 else ""
        lines.append(f"{name:<14}{c['ours_s']:>11.3f}{c['torch_s']:>11.3f}{c['ratio']:>8.2f}{spread}")
    return "\n".join(lines)
