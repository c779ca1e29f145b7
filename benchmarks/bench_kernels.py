"""Benchmark tasu.kernels against their references: `python benchmarks/bench_kernels.py --device cpu|cuda`.

Writes benchmarks/results/kernels_<device>.json: a list of rows, one per (op, implementation, case), each with
op, impl, baseline, shape, mode, dtype, time_ms, baseline_time_ms, speedup, peak_mem_bytes,
baseline_peak_mem_bytes, device, commit, torch and the methods used. The baseline of every row is the op's
reference implementation (its definition): dense smoothed one-hot + LayerNorm + Linear for sim_project, the
per-frame Python loop of tasu.align.psd for psd_compress, dense softmax + einsum for posterior_embed, fp32
log-softmax + F.ctc_loss for ctc_loss.

Method. Inputs are built first in each fresh subprocess (not measured). Time: one subprocess per case warms both
callables up, then alternates reference and implementation call by call `repeats` times (so both see the same
machine load) and reports the minimum (and median) wall time of each; "forward+backward" times the forward plus
torch.autograd.grad of a fixed output gradient. Peak memory: one fresh subprocess per callable. On CPU, after a
warm-up call the process returns freed heap to the OS (malloc_trim), resets its resident high-water mark
(/proc/self/clear_refs = 5), runs the call once and reports VmHWM - VmRSS before the call: every byte the call
touched at its peak (outputs and gradients included, inputs excluded), whoever allocated it. On CUDA: the
allocator's peak allocated bytes above those before the call (through tasu.backend). Threads: 1
(torch.set_num_threads(1), OMP_NUM_THREADS=1) unless --threads says otherwise.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# case id -> what to build and which callables to measure; shapes follow the issue (#5)
CASES = {
    "sim_project_fwd": dict(op="sim_project", mode="forward", shape=dict(B=16, L=64, V=25055, D=1536)),
    "sim_project_fwd_2V": dict(op="sim_project", mode="forward", shape=dict(B=16, L=64, V=50110, D=1536)),
    "sim_project_train": dict(op="sim_project", mode="forward+backward", shape=dict(B=16, L=64, V=25055, D=1536)),
    "psd_compress": dict(op="psd_compress", mode="forward", shape=dict(B=16, T=1000, V=25055)),
    "posterior_embed_exact": dict(op="posterior_embed", mode="forward", shape=dict(B=16, T=64, V=151936, H=1536)),
    "posterior_embed_top8": dict(op="posterior_embed", mode="forward",
                                 shape=dict(B=16, T=64, V=151936, H=1536, top_k=8)),
    "posterior_embed_top32": dict(op="posterior_embed", mode="forward",
                                  shape=dict(B=16, T=64, V=151936, H=1536, top_k=32)),
    "posterior_embed_top32_train": dict(op="posterior_embed", mode="forward+backward",
                                        shape=dict(B=16, T=64, V=151936, H=1536, top_k=32)),
    "ctc_loss_train": dict(op="ctc_loss", mode="forward+backward", shape=dict(B=4, T=250, V=151936, S=50)),
}
BASELINES = {
    "sim_project": "reference: dense smoothed one-hot [B,L,V] + F.layer_norm (fp32) + F.linear",
    "psd_compress": "reference: tasu.align.psd.psd_reference (per-frame Python loop), full batch",
    "posterior_embed": "reference: dense softmax [N,V] (top-k: masked + renormalised) + einsum with E [V,H]",
    "ctc_loss": "reference: fp32 log_softmax [B,T,V] + F.ctc_loss",
}
NOTES = {
    "sim_project_fwd": "per call the fused path still reads all of W once (W @ gamma, W @ beta): O(V D) + O(N D)",
    "sim_project_fwd_2V": "sim_project_fwd with V doubled: the fused path's extra memory does not grow with V",
    "sim_project_train": "grads of W, b, gamma, beta (smooth is data); both sides allocate dW [D, V], the size of W",
    "psd_compress": "probabilities only (no features); synthetic peaky posteriors (psd_posteriors); both sides write "
                    "the compressed [B, T', V] output into fresh memory",
    "posterior_embed_exact": "same O(N V H) multiply-adds on both sides; the fused path never holds the [N, V] softmax",
    "posterior_embed_top8": "baseline: the dense masked reference of the same top-k semantics",
    "posterior_embed_top32": "baseline: the dense masked reference of the same top-k semantics",
    "posterior_embed_top32_train": "gradient w.r.t. the logits only (the LLM embedding is frozen); both sides return "
                                   "a dense [N, V] logit gradient",
    "ctc_loss_train": "both sides return the dense [B, T, V] logit gradient; 50 random target labels per row",
}
REPEATS = {"psd_compress": 3, "posterior_embed": 3, "ctc_loss": 3, "sim_project": 7}


# ------------------------------------------------------------------ inputs (built inside the measuring process)
def psd_posteriors(b: int, t: int, v: int, gen):
    """Peaky CTC-like posteriors: ~65 % blank frames (blank prob 1 - Exp(0.05): ~14 % of them below 0.9), non-blank
    tokens in runs (continuation 0.4) with peak prob U(0.4, 1.0), 80 % of the rest on the blank, the remainder
    spread at random over the vocabulary. lengths: alternate rows full / 80 %."""
    import torch

    blank = torch.rand(b, t, generator=gen) < 0.65
    label = torch.randint(1, v, (b, t), generator=gen)
    cont = torch.rand(b, t, generator=gen) < 0.4
    for i in range(1, t):
        label[:, i] = torch.where(cont[:, i], label[:, i - 1], label[:, i])
    label = torch.where(blank, 0, label)
    peak = torch.where(blank, (1 - torch.empty(b, t).exponential_(20.0, generator=gen)).clamp_min(0.5),
                       0.4 + 0.6 * torch.rand(b, t, generator=gen))
    to_blank = torch.where(blank, 0.0, 0.8 * (1 - peak))
    probs = torch.rand(b, t, v, generator=gen)
    probs.mul_(((1 - peak - to_blank) / probs.sum(-1)).unsqueeze(-1))       # spread mass [B, T, V]
    probs[..., 0] += to_blank
    probs.scatter_(2, label.unsqueeze(-1), peak.unsqueeze(-1))               # the frame's winner
    probs.div_(probs.sum(-1, keepdim=True))
    lengths = torch.full((b,), t, dtype=torch.long)
    lengths[1::2] = t * 4 // 5
    return probs, lengths


def build(case: str, device: str):
    """(callable_by_name, args, inputs needing grad, output-gradient maker) for a case."""
    import torch

    spec = CASES[case]
    s = spec["shape"]
    gen = torch.Generator().manual_seed(0)
    dev = torch.device(device)
    train = spec["mode"] == "forward+backward"
    if spec["op"] == "sim_project":
        v, d = s["V"], s["D"]
        ids = torch.randint(1, v, (s["B"], s["L"]), generator=gen)
        smooth = torch.rand(s["B"], 1, generator=gen).expand(-1, s["L"]).contiguous() * 0.1   # per-sentence alpha
        w = torch.randn(d, v, generator=gen) / v**0.5
        b = torch.zeros(d)
        gam, bet = torch.ones(v), torch.zeros(v)
        tensors = [x.to(dev) for x in (ids, smooth, w, b, gam, bet)]
        params = tensors[2:] if train else []
        for p in params:
            p.requires_grad_()
        return tensors + [1e-5], params
    if spec["op"] == "psd_compress":
        probs, lengths = psd_posteriors(s["B"], s["T"], s["V"], gen)
        return [probs.to(dev), lengths.to(dev), None, 0, 0.9], []
    if spec["op"] == "posterior_embed":
        n = s["B"] * s["T"]
        logits = 4 * torch.randn(s["B"], s["T"], s["V"], generator=gen)
        emb = torch.randn(s["V"], s["H"], generator=gen) * 0.02
        logits, emb = logits.to(dev), emb.to(dev)
        if train:
            logits.requires_grad_()                      # the LLM embedding stays frozen
        assert n == logits.shape[0] * logits.shape[1]
        return [logits, emb, s.get("top_k")], [logits] if train else []
    if spec["op"] == "ctc_loss":
        logits = torch.randn(s["B"], s["T"], s["V"], generator=gen).to(dev).requires_grad_()
        targets = torch.randint(1, s["V"], (s["B"], s["S"]), generator=gen).to(dev)
        il = torch.full((s["B"],), s["T"], dtype=torch.long, device=dev)
        tl = torch.full((s["B"],), s["S"], dtype=torch.long, device=dev)
        return [logits, targets, il, tl, 0, "mean", False], [logits]
    raise KeyError(case)


# ------------------------------------------------------------------ measuring (one subprocess per callable)
def _proc_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


def make_call(case: str, which: str, device: str, args: list, params: list):
    """A zero-argument callable running one forward (+ backward) of implementation `which`, synchronised."""
    import torch

    from tasu.kernels import get_op

    fn = get_op(CASES[case]["op"], impl=which)
    train = CASES[case]["mode"] == "forward+backward"
    grad_out = []

    def call():
        out = fn(*args)
        main = out[0] if isinstance(out, tuple) else out
        if train:
            if not grad_out:
                g = torch.Generator(device="cpu").manual_seed(1)
                grad_out.append(torch.randn(main.shape, generator=g).to(main.device, main.dtype))
            torch.autograd.grad(main, params, grad_out[0])
        if device != "cpu":
            from tasu import backend

            backend.synchronize()
        return out

    return call


def measure_memory(case: str, which: str, device: str) -> dict:
    """Peak extra memory of one call (fresh process: nothing else has run here but building the inputs)."""
    args, params = build(case, device)
    call = make_call(case, which, device, args, params)
    call()                                                         # warm-up (lazy init, kernel compilation)
    if device == "cpu":
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)                                        # freed heap back to the OS: reuse shows in RSS
        before = _proc_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                                           # reset VmHWM to the current RSS
        out = call()
        peak = (_proc_kb("VmHWM") - before) * 1024
    else:
        from tasu import backend

        backend.reset_peak_memory()
        before = backend.peak_memory_bytes()
        out = call()
        peak = backend.peak_memory_bytes() - before
    del out
    return dict(peak_mem_bytes=peak)


def measure_time(case: str, impl: str, device: str, repeats: int) -> dict:
    """Wall times of the reference and `impl`, alternating call by call so that both see the same machine load."""
    args, params = build(case, device)
    calls = {w: make_call(case, w, device, args, params) for w in ("reference", impl)}
    times: dict[str, list[float]] = {w: [] for w in calls}
    for c in calls.values():
        c()                                                        # warm-up
    for _ in range(repeats):
        for w, c in calls.items():
            t0 = time.perf_counter()
            c()
            times[w].append((time.perf_counter() - t0) * 1e3)
    return {w: dict(time_ms=min(t), time_ms_median=statistics.median(t), repeats=repeats) for w, t in times.items()}


# ------------------------------------------------------------------ driver
def environment(device: str, threads: int) -> dict:
    import torch

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        commit = head.stdout.strip() + ("+uncommitted-changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        commit = "uncommitted"
    desc = f"{cpu}; {threads} torch thread(s) of {os.cpu_count()} logical CPUs"
    if device != "cpu":
        desc = f"{device} (accelerator name not queried here); host {desc}"
    return dict(device=desc, commit=commit, torch=torch.__version__, python=sys.version.split()[0])


def run_sub(device: str, threads: int, *what: str) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON line."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), DS_ACCELERATOR=device, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--device", device, "--threads", str(threads), *what]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(what)} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", nargs="*", default=list(CASES), help=f"subset of {list(CASES)}")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--measure-memory", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    ap.add_argument("--measure-time", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    if a.measure_memory:
        print(json.dumps(measure_memory(*a.measure_memory, a.device)))
        return
    if a.measure_time:
        case, which = a.measure_time
        print(json.dumps(measure_time(case, which, a.device, REPEATS[CASES[case]["op"]])))
        return

    impl = "cpu" if a.device == "cpu" else "triton"
    env = environment(a.device, a.threads)
    rows = []
    for case in a.cases:
        spec = CASES[case]
        load = os.getloadavg()[0]
        timed = run_sub(a.device, a.threads, "--measure-time", case, impl)
        base = dict(timed["reference"], **run_sub(a.device, a.threads, "--measure-memory", case, "reference"))
        got = dict(timed[impl], **run_sub(a.device, a.threads, "--measure-memory", case, impl))
        row = dict(op=spec["op"], impl=impl, baseline=BASELINES[spec["op"]], case=case, shape=spec["shape"],
                   mode=spec["mode"], dtype="float32", time_ms=round(got["time_ms"], 3),
                   baseline_time_ms=round(base["time_ms"], 3), speedup=round(base["time_ms"] / got["time_ms"], 2),
                   time_ms_median=round(got["time_ms_median"], 3),
                   baseline_time_ms_median=round(base["time_ms_median"], 3),
                   peak_mem_bytes=got["peak_mem_bytes"], baseline_peak_mem_bytes=base["peak_mem_bytes"],
                   repeats=got["repeats"], baseline_repeats=base["repeats"], load_avg_1min_before=round(load, 2),
                   notes=NOTES[case],
                   timing_method=("min (and median) wall time over repeats after one warm-up each; reference and "
                                  "impl alternate call by call in one fresh subprocess"),
                   memory_method=("VmHWM - VmRSS around one call after malloc_trim + clear_refs (CPU)"
                                  if a.device == "cpu" else "allocator peak above the pre-call level"),
                   **env)
        rows.append(row)
        print(f"{case:30s} {impl:7s} {row['time_ms']:10.2f} ms  baseline {row['baseline_time_ms']:10.2f} ms  "
              f"x{row['speedup']:<8} mem {row['peak_mem_bytes'] / 2**20:9.1f} MiB  baseline "
              f"{row['baseline_peak_mem_bytes'] / 2**20:9.1f} MiB", flush=True)
    out = a.out or ROOT / "benchmarks" / "results" / f"kernels_{a.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
