"""Benchmark: Hyperbatch samplers vs their plain k-diffusion samplers on an SD1.5-shaped UNet (BENCHMARKS.md row
"hyperbatch").

Needs diffusers, which the package does not depend on: `pip install -e '.[bench]'`.

    .venv/bin/python bench/hyperbatch.py [--device cpu|cuda] [--batches 8 16 64] [--repeats N] [--write]
        [--json FILE] [--markdown FILE] [--plot FILE] [--from-json FILE] [--smoke]

The UNet is diffusers' `UNet2DConditionModel` built from a config in code with random weights (compute equals a
trained model's), wrapped as a k-diffusion eps denoiser with classifier-free guidance 7 (UNet batch = 2B), 20
Karras steps. On a GPU: SD1.5's config, fp16, 64² latents, B ∈ {8, 16, 64}. On a CPU: a shrunken config and 8²
latents (64² images), which proves the script runs and gives real CPU figures, not GPU ones.

Measured, each as a median of repeats after a warm-up, side by side in one process:
- the cost of one CFG denoiser call at every batch size the schedules use, timed inside the runs below;
- the schedule's own limit: the model calls a sampler makes, priced at those costs, plain vs Hyperbatch;
- the time of each Hyperbatch sampler vs its plain sampler (same B, steps, noise), and its share of that limit
  (GPU: wall time; CPU: the process's CPU time, one torch thread, as other jobs share the cores);
- sibling diversity vs fork step: L2 between two siblings' final latents over L2 between independent seeds;
- what segmenting alone changes: with fork strength 0 the root's latent vs the plain sampler's, same scale.
`--write` appends a dated section under `## hyperbatch` in docs/BENCHMARKS.md and draws
hyperbatch_efficiency_plots.png at the repository root from these measurements; `--json` keeps the raw numbers
(bench/gpu.sh measures on a GPU machine), and `--from-json FILE --write` makes the section and the plot from them.
"""

import argparse
import datetime
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from k_diffusion import sampling  # noqa: E402

from benchlib import ROOT, append_section, machine  # noqa: E402
from unet import SD15, TINY, TOKENS, CFGDenoiser, Profile, eps_denoiser  # noqa: E402

from lib_pinning import hyperbatch as hb  # noqa: E402
from lib_pinning.noise import SeededNoise  # noqa: E402

PLOT_FILE = ROOT / "hyperbatch_efficiency_plots.png"
SECTION = "## hyperbatch"
STEPS = 20
SMOKE_STEPS = 6  # --smoke: enough for a three-level fork schedule at B=4
CFG_SCALE = 7.0
SAMPLERS = {  # name: (plain k-diffusion function, Hyperbatch function, noise)
    "Euler a": (sampling.sample_euler_ancestral, hb.sample_euler_ancestral_hyperbatch, "ancestral"),
    "DPM++ 2M": (sampling.sample_dpmpp_2m, hb.sample_dpmpp_2m_hyperbatch, "none"),
    "DPM++ SDE": (sampling.sample_dpmpp_sde, hb.sample_dpmpp_sde_hyperbatch, "brownian"),
    "DPM++ 2M SDE": (sampling.sample_dpmpp_2m_sde, hb.sample_dpmpp_2m_sde_hyperbatch, "brownian"),
}


class Clock:
    """GPU: wall seconds after a synchronisation. CPU: this process's CPU seconds, since wall time on a shared
    CPU mostly measures the other jobs (the benchmark runs one torch thread, so CPU time is its compute time)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


@dataclass
class Bench:
    profile: Profile
    device: torch.device
    repeats: int
    steps: int = STEPS
    model: CFGDenoiser = field(init=False)
    sigmas: torch.Tensor = field(init=False)

    def __post_init__(self):
        eps = eps_denoiser(self.profile, self.device)
        self.clock = Clock(self.device)
        self.model = CFGDenoiser(eps, self.clock)
        self.sigmas = sampling.get_sigmas_karras(self.steps, float(eps.sigma_min), float(eps.sigma_max),
                                                 device=self.device)

    def inputs(self, rows: int, seed: int = 0) -> tuple[torch.Tensor, dict]:
        """Noise and conditioning; row r is the same whatever the number of rows."""
        size, width = self.profile.latent_size, self.profile.cross_attention_dim
        x = torch.randn(rows, 4, size, size, generator=torch.Generator("cpu").manual_seed(seed))
        cond = torch.randn(rows, TOKENS, width, generator=torch.Generator("cpu").manual_seed(seed + 1))
        x, cond = x.to(self.device) * self.sigmas[0], cond.to(self.device)
        return x, {"cond": cond, "uncond": torch.zeros_like(cond), "cond_scale": CFG_SCALE}

    def noise(self, kind: str, x: torch.Tensor, seed: int) -> dict:
        """A seeded full-batch noise sampler (one row per seed), the same for the plain and Hyperbatch runs."""
        if kind == "ancestral":
            seeds = [seed + row for row in range(len(x))]
            return {"noise_sampler": SeededNoise(seeds, x.shape[1:], x.device).ancestral}
        if kind == "brownian":
            positive = self.sigmas[self.sigmas > 0]
            tree = sampling.BrownianTreeNoiseSampler(x, float(positive.min()), float(positive.max()), seed=seed)
            return {"noise_sampler": tree}
        return {}

    def seconds(self, run) -> float:
        start = self.clock()
        run()
        return self.clock() - start

    @torch.no_grad()
    def sample(self, function, rows: int, noise_kind: str, seed: int = 0, **options) -> torch.Tensor:
        x, extra = self.inputs(rows, seed)
        return function(self.model, x, self.sigmas, extra_args=extra, disable=True,
                        **self.noise(noise_kind, x, seed), **options)

    def warm_up(self, function, rows: int, noise_kind: str) -> None:
        self.sample(function, rows, noise_kind)

    def sampler_seconds(self, plain, hyper, rows: int, noise_kind: str) -> tuple[float, float, list, list, list]:
        """Median seconds of the plain and Hyperbatch samplers, timed alternately, the (rows, seconds) of every
        model call they made, and the rows of each one's model calls (from its first run)."""
        plain_times, hyper_times, calls, call_rows = [], [], [], {}
        for _ in range(self.repeats):
            for function, times in ((plain, plain_times), (hyper, hyper_times)):
                self.model.calls.clear()
                times.append(self.seconds(lambda: self.sample(function, rows, noise_kind)))
                calls += self.model.calls
                call_rows.setdefault(function, [call[0] for call in self.model.calls])
        return (statistics.median(plain_times), statistics.median(hyper_times), calls, call_rows[plain],
                call_rows[hyper])


# --- measurements -----------------------------------------------------------------------------------------


def measure_batch(bench: Bench, batch: int, measured: list[dict], timed_calls: list, saved) -> None:
    """Per sampler at one batch size: the plain and Hyperbatch seconds and the rows of their model calls, added
    to `measured`; the (rows, seconds) of every timed model call are added to `timed_calls`. `saved()` after each."""
    for name, (plain, hyper, noise_kind) in SAMPLERS.items():
        plain_s, hyper_s, calls, plain_rows, hyper_rows = bench.sampler_seconds(plain, hyper, batch, noise_kind)
        timed_calls += calls
        measured.append({"batch": batch, "sampler": name, "plain_s": plain_s, "hyper_s": hyper_s,
                         "speedup": plain_s / hyper_s, "plain_rows": plain_rows, "hyper_rows": hyper_rows})
        print(f"  B={batch:3d} {name:13s} plain {plain_s:7.3f} s  hyperbatch {hyper_s:7.3f} s  "
              f"speed-up {plain_s / hyper_s:5.2f}x", flush=True)
        saved()


def priced(results: list[dict], timed_calls: list) -> tuple[dict[int, float], list[dict]]:
    """Step costs (median seconds of the model calls at each batch size, over every timed run) and, per batch
    and sampler, the schedule's limit (its model calls priced at those step costs) and the share of it reached."""
    costs = {rows: statistics.median(s for r, s in timed_calls if r == rows)
             for rows in sorted({rows for rows, _ in timed_calls})}
    speedups = []
    for row in results:
        limit = sum(costs[r] for r in row["plain_rows"]) / sum(costs[r] for r in row["hyper_rows"])
        speedups.append({key: value for key, value in row.items() if not key.endswith("_rows")}
                        | {"limit": limit, "share": row["speedup"] / limit})
    return costs, speedups


def sibling_distance(latents: torch.Tensor) -> float:
    """Mean L2 between the two rows of every group of two."""
    pairs = latents.float().flatten(1).view(-1, 2, latents[0].numel())
    return float((pairs[:, 0] - pairs[:, 1]).norm(dim=1).mean())


def measure_diversity(bench: Bench, fork_steps: list[int], roots: int, strengths: list[float]) -> dict:
    """L2 between siblings forked at each step, over L2 between independent seeds (a fork before step 0)."""
    curves = {}
    for name, (_, hyper, noise_kind) in SAMPLERS.items():
        for strength in strengths if name == "DPM++ 2M" else [1.0]:
            distances = [sibling_distance(bench.sample(hyper, 2 * roots, noise_kind, groups=roots,
                                                       batch_sizes=[1] * step + [2] * (bench.steps - step),
                                                       fork_strength=strength)) for step in fork_steps]
            curves[(name, strength)] = [d / distances[0] for d in distances]
    return curves


def measure_segmenting(bench: Bench, batch: int) -> dict[str, tuple[float, float]]:
    """Fork strength 0 makes children copies: the root then differs from the plain sampler only by segmenting
    and by the batch size its rows were computed in. The second figure is that floor: the plain sampler's row 0
    computed alone vs in the batch. Both are relative to the L2 between two seeds' latents."""
    result = {}
    for name, (plain, hyper, noise_kind) in SAMPLERS.items():
        reference = bench.sample(plain, batch, noise_kind).float()
        root = bench.sample(hyper, batch, noise_kind, fork_strength=0.0).float()[0]
        alone = bench.sample(plain, 1, noise_kind).float()[0]
        scale = (reference[0] - reference[1]).norm()
        result[name] = (float((root - reference[0]).norm() / scale), float((alone - reference[0]).norm() / scale))
    return result


# --- report -----------------------------------------------------------------------------------------------


def schedule_text(batch: int, steps: int) -> str:
    sizes = [size for _, size in hb.schedule(batch, steps)]
    return " · ".join(f"{sizes.count(size)}@{size}" for size in sorted(set(sizes)))


def tables(costs, speedups, curves, fork_steps, segmenting, steps: int) -> str:
    lines = ["Cost of one CFG denoiser call (UNet batch 2B), ms: "
             + " · ".join(f"B={rows} {seconds * 1e3:.1f}" for rows, seconds in costs.items()), "",
             "| B | schedule (steps@rows) | sampler | plain s | Hyperbatch s | speed-up | schedule limit | "
             "share of limit |", "|---|---|---|---|---|---|---|---|"]
    for row in speedups:
        lines.append(f"| {row['batch']} | {schedule_text(row['batch'], steps)} | {row['sampler']} | {row['plain_s']:.3f} | "
                     f"{row['hyper_s']:.3f} | {row['speedup']:.2f}× | {row['limit']:.2f}× | {row['share']:.0%} |")
    if curves:  # not measured with --speedups-only
        lines += ["", "Sibling diversity: L2 between two siblings' final latents / L2 between independent seeds, by "
                  "the step before which they fork (fork strength η):", "",
                  "| sampler | η | " + " | ".join(f"step {step}" for step in fork_steps) + " |",
                  "|---|---|" + "---|" * len(fork_steps)]
    for (name, strength), ratios in curves.items():
        lines.append(f"| {name} | {strength:g} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    if segmenting:
        lines += ["", "Segmenting (fork strength 0: the root's latent vs the plain sampler's) and, for scale, the "
                  "plain sampler's row computed alone vs in the batch; both over the L2 between two seeds: "
                  + " · ".join(f"{name} {seg:.1e} (alone {floor:.1e})" for name, (seg, floor) in segmenting.items())]
    return "\n".join(lines)


def plot(costs, speedups, curves, fork_steps, steps: int, title: str, path=PLOT_FILE) -> None:
    figure, (cost_axes, speed_axes, diversity_axes) = plt.subplots(1, 3, figsize=(17, 5))
    rows = list(costs)
    cost_axes.plot(rows, [costs[r] * 1e3 for r in rows], "o-", label="measured")
    cost_axes.plot(rows, [costs[rows[0]] * 1e3 * r / rows[0] for r in rows], "--", color="grey",
                   label="proportional to B")
    cost_axes.set(xscale="log", yscale="log", xlabel="batch B (UNet batch 2B)", ylabel="ms per denoiser call",
                  title="Step cost")
    cost_axes.legend()
    batches = sorted({row["batch"] for row in speedups})
    names = list(SAMPLERS)
    width = 0.8 / len(names)
    for index, batch in enumerate(batches):
        for offset, name in enumerate(names):
            row = next(r for r in speedups if r["batch"] == batch and r["sampler"] == name)
            position = index + offset * width
            speed_axes.bar(position, row["speedup"], width, color=f"C{offset}", label=name if index == 0 else None)
            speed_axes.hlines(row["limit"], position - width / 2, position + width / 2, color="black",
                              label="schedule limit (step costs)" if index == offset == 0 else None)
    speed_axes.axhline(1, color="grey", linewidth=0.8)
    speed_axes.set(xticks=[i + width * (len(names) - 1) / 2 for i in range(len(batches))],
                   xticklabels=[f"B={b}" for b in batches],
                   ylabel="speed-up over the plain sampler", title=f"Measured speed-up ({steps} steps)")
    speed_axes.legend(fontsize=8, loc="lower right")
    styles = {0.5: ":", 1.0: "-", 2.0: "--"}
    for (name, strength), ratios in curves.items():
        diversity_axes.plot(fork_steps, ratios, marker="o", linestyle=styles.get(strength, "-."),
                            color=f"C{names.index(name)}", label=f"{name} η={strength:g}")
    diversity_axes.set(xlabel="step before which siblings fork", ylabel="sibling L2 / independent-seed L2",
                       title="Sibling diversity", ylim=(0, None))
    diversity_axes.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def measure(args, device: torch.device, save) -> dict:
    """Every measurement; `save(results)` is called after each stage, so that a run stopped by a time limit still
    leaves what it measured."""
    gpu = device.type == "cuda"
    profile = TINY if args.smoke or not gpu else SD15
    batches = args.batches or ([4] if args.smoke else [8, 16, 64] if gpu else [8, 16])
    bench = Bench(profile, device, args.repeats or (1 if args.smoke else 2 if gpu else 3),
                  SMOKE_STEPS if args.smoke else STEPS)
    fork_steps = list(range(0, bench.steps, 3 if args.smoke else 4))
    started = time.perf_counter()
    results = {"machine": machine(device), "gpu": gpu, "profile": profile.name,
               "block_out_channels": profile.block_out_channels, "layers_per_block": profile.layers_per_block,
               "latent_size": profile.latent_size, "dtype": str(profile.dtype).removeprefix("torch."),
               "repeats": bench.repeats, "steps": bench.steps, "fork_steps": fork_steps, "date": datetime.date.today().isoformat()}
    print(f"{profile.name} UNet, {profile.latent_size}² latents, {profile.dtype}, {machine(device)}", flush=True)
    if args.speedups_only:  # kernels and allocator: one run at the largest batch
        bench.warm_up(sampling.sample_dpmpp_2m, max(batches), "none")
    else:
        for name, (plain, hyper, noise_kind) in SAMPLERS.items():  # kernels, allocator, the samplers' first calls
            bench.warm_up(plain, batches[0], noise_kind)
            bench.warm_up(hyper, batches[0], noise_kind)
        # The cheap measurements first: a time limit that stops the run later still leaves them.
        curves = measure_diversity(bench, fork_steps, 1 if args.smoke else args.roots, [0.5, 1.0, 2.0])
        results.update(curves=[{"sampler": name, "strength": strength, "ratios": ratios}
                               for (name, strength), ratios in curves.items()],
                       segmenting=measure_segmenting(bench, batches[0]))
    measured, timed_calls = [], []

    def saved() -> None:
        costs, speedups = priced(measured, timed_calls)
        results.update(costs={str(rows): seconds for rows, seconds in costs.items()}, speedups=speedups,
                       seconds=time.perf_counter() - started)
        save(results)

    for batch in batches:
        measure_batch(bench, batch, measured, timed_calls, saved)
    return results


def merged(runs: list[dict]) -> dict:
    """One result from several runs' numbers: every speed-up row, the step costs (the first run that measured a
    row count wins), the diversity and segmenting of the first run that has them; the note says which run
    measured which batch sizes with how many repeats."""
    runs = sorted(runs, key=lambda run: "curves" not in run)  # the full run first, then --speedups-only ones
    results = dict(runs[0])
    for run in runs[1:]:
        results["costs"] = {**run["costs"], **results["costs"]}
        results["speedups"] = results["speedups"] + run["speedups"]
        results["seconds"] += run["seconds"]
        for key in ("curves", "segmenting"):
            results.setdefault(key, run.get(key))
    if len(runs) > 1:
        results["note"] = "Measured in {} runs: {}.".format(len(runs), "; ".join(
            f"B = {', '.join(str(b) for b in sorted({row['batch'] for row in run['speedups']}))} with "
            f"{run['repeats']} timed run(s) per sampler" for run in runs))
    return results


def section(results: dict) -> tuple[str, tuple]:
    """The dated section for docs/BENCHMARKS.md and the plot's inputs, from measured (or saved) numbers."""
    costs = {int(rows): seconds for rows, seconds in results["costs"].items()}
    curves = {(curve["sampler"], curve["strength"]): curve["ratios"] for curve in results.get("curves", [])}
    segmenting = {name: tuple(pair) for name, pair in results.get("segmenting", {}).items()}
    text = tables(costs, results["speedups"], curves, results["fork_steps"], segmenting, results["steps"])
    timing = (results["note"] if results.get("note") else
              f"Medians of {results['repeats']} repeats after a warm-up.")
    header = (f"### {results['date']} — {results['machine']}\n\n"
              f"`bench/hyperbatch.py`: {results['profile']} UNet (diffusers, random weights, block channels "
              f"{tuple(results['block_out_channels'])}, {results['layers_per_block']} layer(s) per block), "
              f"{results['latent_size']}² latents, {results['dtype']}, CFG {CFG_SCALE:g}, {results['steps']} Karras "
              f"steps, {'wall time' if results['gpu'] else 'CPU time of the process (shared cores)'} "
              f"({results['seconds']:.0f} s in all). {timing}\n")
    title = (f"Hyperbatch on {results['machine']}: {results['profile']} UNet, {results['latent_size']}² latents, "
             f"CFG {CFG_SCALE:g}")
    return header + "\n" + text, (costs, results["speedups"], curves, results["fork_steps"], results["steps"], title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", help="batch sizes (GPU: 8 16 64; CPU: 8 16)")
    parser.add_argument("--repeats", type=int, help="timed repeats after a warm-up (GPU 2, CPU 3)")
    parser.add_argument("--roots", type=int, default=4, help="sibling pairs per diversity point (4)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1: on a shared machine a second thread mostly waits for the first)")
    parser.add_argument("--speedups-only", action="store_true",
                        help="only the speed-ups and step costs (no diversity, segmenting or per-sampler warm-up)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves the script runs, measures nothing")
    parser.add_argument("--json", help="write the raw numbers there (after each stage)")
    parser.add_argument("--markdown", help="write the dated section there")
    parser.add_argument("--plot", default=str(PLOT_FILE), help="where --write draws the plot (%(default)s)")
    parser.add_argument("--from-json", nargs="+", metavar="FILE",
                        help="measure nothing: the section and plot from numbers saved by --json (several files: "
                             "merged, e.g. B = 8 and 16 from one run and B = 64 from a --speedups-only run)")
    parser.add_argument("--write", action="store_true", help="append to docs/BENCHMARKS.md and draw the plot")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def save(results: dict) -> None:
        if args.json:
            with open(args.json, "w") as file:
                json.dump(results, file, indent=1)

    if args.from_json:
        results = merged([json.loads(Path(path).read_text()) for path in args.from_json])
    else:
        results = measure(args, torch.device(args.device), save)
    text, plot_inputs = section(results)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write(text + "\n")
    if args.write or args.from_json:
        plot(*plot_inputs, path=args.plot)
        print(f"drew {args.plot}", file=sys.stderr)
    if args.write:
        append_section(SECTION, text)
        print("appended to docs/BENCHMARKS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
