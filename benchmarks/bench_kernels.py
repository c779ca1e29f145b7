"""Benchmark tasu.kernels against the reference TASU code: `python benchmarks/bench_kernels.py --device cpu|cuda`.

Writes benchmarks/results/kernels_<device>.json: a list of rows, one per (op, implementation, case), each with
op, impl, baseline, shape, mode, dtype, time_ms, baseline_time_ms, speedup, peak_mem_bytes,
baseline_peak_mem_bytes, max_rel_diff (impl output vs baseline output), device, commit, torch, malloc (the C
allocator: glibc, or tcmalloc / jemalloc under LD_PRELOAD, where memory is not measured), the machine's load and
the methods used.

Baselines: what the reference TASU code does for the same work (NOTES.md §1), fed the same inputs:
  sim_project    per sample, per token, a dense smoothed one-hot row built on the host (torch.full(V, a / V), then
                 += 1 - a at the token: the reference's Python loop), stacked to [L, V] per sample and [B, L, V]
                 per batch, then the reference projector's first layer: F.layer_norm(V) + F.linear (fp32); autograd
                 for the gradients ("forward+backward")
  psd_compress   tasu.align.psd.psd_reference: per row, per frame a Python step with a host sync (int(argmax)),
                 per merged frame a mean and a host sync (float(blank prob)), per kept frame a row copy
  posterior_embed  dense softmax [N, V] (top-k: masked + renormalised) + einsum with E [V, H] (the op's reference)
  ctc_loss       fp32 log_softmax [B, T, V] + F.ctc_loss (the op's reference)

Method. Inputs are built first in each fresh subprocess (not measured). Time: one subprocess per case warms both
callables up, then alternates baseline and implementation call by call `repeats` times (so both see the same
machine load) and reports the minimum (and median) wall time of each; "forward+backward" times the forward plus
torch.autograd.grad of a fixed output gradient. Beside the wall time: the process CPU time of the same calls
(cpu_time_ms, speedup_cpu_time; less sensitive to other jobs on a shared machine). The same subprocess compares
the two outputs once (max_rel_diff = max |impl - baseline| / max |baseline| over the op's outputs and gradients).
Peak memory: one fresh subprocess per callable. On CPU, after a warm-up call the process returns freed heap to the
OS (malloc_trim), resets its resident high-water mark (/proc/self/clear_refs = 5), runs the call once and reports
VmHWM - VmRSS before the call: every byte the call touched at its peak (outputs and gradients included, inputs
excluded), whoever allocated it. On CUDA: the allocator's peak allocated bytes above those before the call
(through tasu.backend). Threads: 1 (torch.set_num_threads(1), OMP_NUM_THREADS=1) unless --threads says otherwise.
The 1-minute load average before and after each case is recorded (the CPU machine is shared: a load above the
thread count slows both sides).
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
    "sim_project": "reference TASU: per-sample Python loop of dense smoothed one-hot rows (torch.full + peak) -> "
                   "[B,L,V] -> F.layer_norm (fp32) + F.linear",
    "psd_compress": "reference TASU: tasu.align.psd.psd_reference (per-frame Python loop, host sync per frame)",
    "posterior_embed": "reference: dense softmax [N,V] (top-k: masked + renormalised) + einsum with E [V,H]",
    "ctc_loss": "reference: fp32 log_softmax [B,T,V] + F.ctc_loss",
}
NOTES = {
    "sim_project_fwd": "per call the fused path still reads all of W once (W @ [gamma, beta]): O(V D) + O(N D); "
                       "that pass is the floor (see benchmarks/README.md)",
    "sim_project_fwd_2V": "sim_project_fwd with V doubled: the fused path's extra memory does not grow with V",
    "sim_project_train": "grads of W, b, gamma, beta (smooth is data); both sides allocate dW [D, V], the size of W "
                         "(fresh pages: the floor of the fused path, see benchmarks/README.md)",
    "psd_compress": "probabilities only (no features); CTC-like peaky posteriors (psd_posteriors; the blank "
                    "fractions are in `input`); both sides write the compressed [B, T', V] output into fresh memory",
    "posterior_embed_exact": "same O(N V H) multiply-adds on both sides; the fused path never holds the [N, V] softmax",
    "posterior_embed_top8": "baseline: the dense masked reference of the same top-k semantics",
    "posterior_embed_top32": "baseline: the dense masked reference of the same top-k semantics",
    "posterior_embed_top32_train": "gradient w.r.t. the logits only (the LLM embedding is frozen); both sides return "
                                   "a dense [N, V] logit gradient",
    "ctc_loss_train": "both sides return the dense [B, T, V] logit gradient; 50 random target labels per row",
}
REPEATS = {"psd_compress": 3, "posterior_embed": 3, "ctc_loss": 3, "sim_project": 7}
# GPU calls take milliseconds (the per-frame PSD baseline ~1 s): more repeats for a stable minimum
REPEATS_CUDA = {"psd_compress": 5, "posterior_embed": 20, "ctc_loss": 20, "sim_project": 30}


# ------------------------------------------------------------------ baselines (the reference TASU code's way)
def baseline_sim_project(ids, smooth, weight, bias=None, ln_weight=None, ln_bias=None, eps=1e-5):
    """The reference's text branch + projector first layer: one-hot rows built per sample, per token on the host
    (token ids and alpha are host values there: the tokenizer's list and random.uniform), stacked, then dense
    LayerNorm(V) + Linear(V, D)."""
    import torch
    import torch.nn.functional as F

    v = weight.shape[1]
    samples = []
    for toks, alphas in zip(ids.tolist(), smooth.tolist()):
        rows = []
        for t, a in zip(toks, alphas):
            row = torch.full((v,), a / v)
            row[t] += 1.0 - a
            rows.append(row)
        samples.append(torch.stack(rows))                                     # [L, V]
    x = torch.stack(samples).to(weight.device)                                # [B, L, V]
    return F.linear(F.layer_norm(x, (v,), ln_weight, ln_bias, eps), weight, bias)


def baseline_psd(probs, lengths, features=None, blank_id=0, blank_threshold=0.9):
    """The reference's PSD: the per-frame loop (tasu.align.psd.psd_reference)."""
    from tasu.align.psd import psd_reference
    from tasu.types import Posteriors

    out = psd_reference(Posteriors(lengths=lengths, vocab_size=probs.shape[-1], probs=probs, features=features,
                                   blank_id=blank_id), blank_threshold)
    return out.probs, out.features, out.lengths


def baseline_fn(op: str):
    from tasu.kernels import get_op

    return {"sim_project": baseline_sim_project, "psd_compress": baseline_psd}.get(op) or get_op(op, "reference")


# ------------------------------------------------------------------ inputs (built inside the measuring process)
PSD_INPUT = dict(frames_per_s=25, spike_start=0.12, spike_continue=0.2, blank_drop_mean=0.05)


def psd_frames(b: int, t: int, gen):
    """The [B, T] skeleton of CTC-like posteriors of a 25k-BPE encoder at 25 frames/s emitting ~3.5 tokens/s:
    a token spike starts at a frame with p 0.12 and continues onto the next with p 0.2 (runs of 1-2 frames; ~15 %
    of frames), peak prob U(0.4, 1.0) with 80 % of the rest on the blank; every other frame is a blank frame with
    blank prob 1 - Exp(mean 0.05), at least 0.5 (~13.5 % of them below 0.9, kept by PSD).
    Returns (label [B, T], peak [B, T], blank mass of token frames [B, T], is_blank [B, T])."""
    import torch

    start = torch.rand(b, t, generator=gen) < PSD_INPUT["spike_start"]
    cont = torch.rand(b, t, generator=gen) < PSD_INPUT["spike_continue"]
    label = torch.randint(1, 2**31 - 1, (b, t), generator=gen)
    token = start.clone()
    for i in range(1, t):
        go_on = token[:, i - 1] & cont[:, i] & ~start[:, i]
        label[:, i] = torch.where(go_on, label[:, i - 1], label[:, i])
        token[:, i] |= go_on
    blank = ~token
    drop = torch.empty(b, t).exponential_(1.0 / PSD_INPUT["blank_drop_mean"], generator=gen)
    peak = torch.where(blank, (1 - drop).clamp_min(0.5), 0.4 + 0.6 * torch.rand(b, t, generator=gen))
    to_blank = torch.where(blank, 0.0, 0.8 * (1 - peak))
    return label, peak, to_blank, blank


def psd_input_stats(b: int, t: int, threshold: float = 0.9) -> dict:
    """Frame fractions of the benchmark's PSD input (valid frames only; from the same generator and seed)."""
    import torch

    label, peak, to_blank, blank = psd_frames(b, t, torch.Generator().manual_seed(0))
    lengths = _lengths(b, t)
    valid = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    blank_prob = torch.where(blank, peak, to_blank)             # before the final renormalisation (~1e-7 off)
    n = int(valid.sum())
    return dict(PSD_INPUT, valid_frames=n, blank_argmax_frac=round(float((blank & valid).sum()) / n, 4),
                blank_prob_ge_threshold_frac=round(float(((blank_prob >= threshold) & valid).sum()) / n, 4),
                blank_prob_gt_0_6_frac=round(float(((blank_prob > 0.6) & valid).sum()) / n, 4))


def _lengths(b: int, t: int):
    import torch

    lengths = torch.full((b,), t, dtype=torch.long)
    lengths[1::2] = t * 4 // 5                                   # alternate rows full / 80 %
    return lengths


def psd_posteriors(b: int, t: int, v: int, gen):
    """[B, T, V] probabilities on the psd_frames skeleton: the frame's winner (blank or token) gets its peak, token
    frames put 80 % of the rest on the blank, the remainder is spread at random over the vocabulary."""
    import torch

    label, peak, to_blank, blank = psd_frames(b, t, gen)
    label = torch.where(blank, 0, label % (v - 1) + 1)
    probs = torch.rand(b, t, v, generator=gen)
    probs.mul_(((1 - peak - to_blank) / probs.sum(-1)).unsqueeze(-1))       # spread mass [B, T, V]
    probs[..., 0] += to_blank
    probs.scatter_(2, label.unsqueeze(-1), peak.unsqueeze(-1))               # the frame's winner
    probs.div_(probs.sum(-1, keepdim=True))
    return probs, _lengths(b, t)


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
def make_call(case: str, which: str, device: str, args: list, params: list):
    """A zero-argument callable running one forward (+ backward) of `which` ("baseline" or an implementation
    family of tasu.kernels), synchronised; it returns the forward's output (and the gradients)."""
    import torch

    from tasu.kernels import get_op

    op = CASES[case]["op"]
    fn = baseline_fn(op) if which == "baseline" else get_op(op, impl=which)
    train = CASES[case]["mode"] == "forward+backward"
    grad_out = []

    def call():
        out = fn(*args)
        main = out[0] if isinstance(out, tuple) else out
        grads = ()
        if train:
            if not grad_out:
                g = torch.Generator(device="cpu").manual_seed(1)
                grad_out.append(torch.randn(main.shape, generator=g).to(main.device, main.dtype))
            grads = torch.autograd.grad(main, params, grad_out[0])
        if device != "cpu":
            from tasu import backend

            backend.synchronize()
        return (out if isinstance(out, tuple) else (out,)) + tuple(grads)

    return call


def max_rel_diff(got: tuple, want: tuple) -> float:
    """max over the outputs of max |got - want| / max |want| (shapes must agree; None entries must match)."""
    import torch

    worst = 0.0
    for a, b in zip(got, want, strict=True):
        if a is None or b is None:
            if (a is None) != (b is None):
                return float("inf")
            continue
        if a.shape != b.shape:
            return float("inf")
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        if a.is_floating_point() or b.is_floating_point():
            worst = max(worst, float((a - b).abs().max()) / max(float(b.abs().max()), 1e-30) if b.numel() else 0.0)
        elif not torch.equal(a, b):
            return float("inf")
    return worst


def measure_memory(case: str, which: str, device: str) -> dict:
    """Peak extra memory of one call (fresh process: nothing else has run here but building the inputs)."""
    args, params = build(case, device)
    call = make_call(case, which, device, args, params)
    from tasu import backend

    call()                                                         # warm-up (lazy init, kernel compilation)
    if device == "cpu":
        ctypes.CDLL("libc.so.6").malloc_trim(0)                    # freed heap back to the OS: reuse shows in RSS
    if not backend.reset_peak_memory():                            # CPU: VmHWM <- current RSS
        raise RuntimeError("cannot reset the peak memory here (/proc/self/clear_refs)")
    before = backend.peak_memory_bytes()
    out = call()
    peak = backend.peak_memory_bytes() - before
    del out
    return dict(peak_mem_bytes=peak)


def measure_time(case: str, impl: str, device: str, repeats: int) -> dict:
    """Wall times of the baseline and `impl`, alternating call by call so that both see the same machine load."""
    args, params = build(case, device)
    calls = {w: make_call(case, w, device, args, params) for w in ("baseline", impl)}
    times: dict[str, list[float]] = {w: [] for w in calls}
    cpu: dict[str, list[float]] = {w: [] for w in calls}
    first = {w: c() for w, c in calls.items()}                    # warm-up; its outputs are compared
    diff = max_rel_diff(first[impl], first["baseline"])
    del first
    for _ in range(repeats):
        for w, c in calls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            c()
            times[w].append((time.perf_counter() - t0) * 1e3)
            cpu[w].append((time.process_time() - c0) * 1e3)
    out = {w: dict(time_ms=min(t), time_ms_median=statistics.median(t), cpu_time_ms=min(cpu[w]), repeats=repeats)
           for w, t in times.items()}
    out["max_rel_diff"] = diff
    return out


# ------------------------------------------------------------------ driver
def mib(n: int | None) -> str:
    return f"{n / 2**20:9.1f}" if n is not None else "        -"


def environment(device: str, threads: int) -> dict:
    import torch

    from tasu.provenance import cpu_name, git_commit, malloc_library

    commit = git_commit()
    desc = f"{cpu_name()}; {threads} torch thread(s) of {os.cpu_count()} logical CPUs"
    if device != "cpu":
        from tasu import backend

        desc = f"{device}: {backend.device_name()}; host {desc}"
    return dict(device=desc, commit=commit, torch=torch.__version__, python=sys.version.split()[0],
                malloc=malloc_library())


def run_sub(device: str, threads: int, *what: str) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON line."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), DS_ACCELERATOR=device, PYTHONPATH=path)
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
    ap.add_argument("--update", action="store_true",
                    help="keep the other cases' rows of an existing --out file (each row records its own commit)")
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
        repeats = (REPEATS if a.device == "cpu" else REPEATS_CUDA)[CASES[case]["op"]]
        print(json.dumps(measure_time(case, which, a.device, repeats)))
        return

    impl = "cpu" if a.device == "cpu" else "triton"
    env = environment(a.device, a.threads)
    out = a.out or ROOT / "benchmarks" / "results" / f"kernels_{a.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = {r["case"]: r for r in json.loads(out.read_text())} if a.update and out.is_file() else {}
    rows = []
    for case in a.cases:
        spec = CASES[case]
        load = os.getloadavg()[0]
        timed = run_sub(a.device, a.threads, "--measure-time", case, impl)
        # RSS shows a call's peak only when freed memory goes back to the OS (glibc after malloc_trim); tcmalloc
        # and jemalloc keep it mapped, so under them (LD_PRELOAD) memory is not measured
        rss_ok = a.device != "cpu" or env["malloc"] == "glibc"
        base, got = ({**timed[which], **(run_sub(a.device, a.threads, "--measure-memory", case, which) if rss_ok
                                         else {"peak_mem_bytes": None})} for which in ("baseline", impl))
        row = dict(op=spec["op"], impl=impl, baseline=BASELINES[spec["op"]], case=case, shape=spec["shape"],
                   mode=spec["mode"], dtype="float32", time_ms=round(got["time_ms"], 3),
                   baseline_time_ms=round(base["time_ms"], 3), speedup=round(base["time_ms"] / got["time_ms"], 2),
                   time_ms_median=round(got["time_ms_median"], 3),
                   baseline_time_ms_median=round(base["time_ms_median"], 3),
                   cpu_time_ms=round(got["cpu_time_ms"], 3), baseline_cpu_time_ms=round(base["cpu_time_ms"], 3),
                   speedup_cpu_time=round(base["cpu_time_ms"] / got["cpu_time_ms"], 2),
                   peak_mem_bytes=got["peak_mem_bytes"], baseline_peak_mem_bytes=base["peak_mem_bytes"],
                   repeats=got["repeats"], baseline_repeats=base["repeats"],
                   max_rel_diff=float(f"{timed['max_rel_diff']:.3g}"), load_avg_1min_before=round(load, 2),
                   load_avg_1min_after=round(os.getloadavg()[0], 2), notes=NOTES[case],
                   timing_method=("min (and median) wall time over repeats after one warm-up each; baseline and "
                                  "impl alternate call by call in one fresh subprocess; cpu_time_ms: min process "
                                  "CPU time of the same calls (less sensitive to other jobs on the machine)"),
                   memory_method=("allocator peak above the pre-call level" if a.device != "cpu" else
                                  "VmHWM - VmRSS around one call after malloc_trim + clear_refs (CPU)" if rss_ok else
                                  f"not measured: {env['malloc']} keeps freed memory mapped, so RSS cannot show it"),
                   **env)
        if spec["op"] == "psd_compress":
            row["input"] = psd_input_stats(spec["shape"]["B"], spec["shape"]["T"])
        rows.append(row)
        kept.pop(case, None)
        ordered = sorted([*kept.values(), *rows], key=lambda r: list(CASES).index(r["case"]))
        out.write_text(json.dumps(ordered, indent=1) + "\n")       # after every case: a time limit loses none
        print(f"{case:30s} {impl:7s} {row['time_ms']:10.2f} ms  baseline {row['baseline_time_ms']:10.2f} ms  "
              f"x{row['speedup']:<8} (cpu time x{row['speedup_cpu_time']:<8}) mem "
              f"{mib(row['peak_mem_bytes'])} MiB  baseline {mib(row['baseline_peak_mem_bytes'])} MiB  "
              f"load {load:.2f}", flush=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
