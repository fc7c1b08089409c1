"""Benchmark: Hyperbatch samplers vs their plain k-diffusion samplers on an SD1.5-shaped UNet (BENCHMARKS.md row
"hyperbatch").

Needs diffusers, which the package does not depend on: `pip install -e '.[bench]'`.

    .venv/bin/python bench/hyperbatch.py [--device cpu|cuda] [--batches 8 16 64] [--repeats 5] [--write]

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
hyperbatch_efficiency_plots.png at the repository root from these measurements.
"""

import argparse
import datetime
import statistics
import time
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from k_diffusion import sampling  # noqa: E402
from k_diffusion.external import DiscreteEpsDDPMDenoiser  # noqa: E402

from benchlib import ROOT, append_section, machine  # noqa: E402

from lib_pinning import hyperbatch as hb  # noqa: E402
from lib_pinning.noise import SeededNoise  # noqa: E402

PLOT_FILE = ROOT / "hyperbatch_efficiency_plots.png"
SECTION = "## hyperbatch"
STEPS = 20
CFG_SCALE = 7.0
TOKENS = 77
SAMPLERS = {  # name: (plain k-diffusion function, Hyperbatch function, noise)
    "Euler a": (sampling.sample_euler_ancestral, hb.sample_euler_ancestral_hyperbatch, "ancestral"),
    "DPM++ 2M": (sampling.sample_dpmpp_2m, hb.sample_dpmpp_2m_hyperbatch, "none"),
    "DPM++ SDE": (sampling.sample_dpmpp_sde, hb.sample_dpmpp_sde_hyperbatch, "brownian"),
    "DPM++ 2M SDE": (sampling.sample_dpmpp_2m_sde, hb.sample_dpmpp_2m_sde_hyperbatch, "brownian"),
}


@dataclass(frozen=True)
class Profile:
    name: str
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    cross_attention_dim: int
    latent_size: int
    dtype: torch.dtype


SD15 = Profile("SD1.5-shaped", (320, 640, 1280, 1280), 2, 768, 64, torch.float16)
TINY = Profile("shrunken SD1.5-shaped", (32, 64, 64, 64), 1, 64, 8, torch.float32)


def build_unet(profile: Profile, device: torch.device, seed: int = 0) -> UNet2DConditionModel:
    """SD1.5's UNet layout (three cross-attention levels and a plain one) with random weights."""
    with torch.random.fork_rng(devices=[]):  # diffusers initialises from the global RNG: leave it as it was
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=profile.latent_size, in_channels=4, out_channels=4, layers_per_block=profile.layers_per_block,
            block_out_channels=profile.block_out_channels,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=profile.cross_attention_dim, attention_head_dim=8)
    unet = unet.to(device).eval()
    return unet if profile.dtype == torch.float32 else unet.to(dtype=profile.dtype)


class EpsUNet(torch.nn.Module):
    """diffusers' UNet in the `inner_model(x, t, cond=…)` form k-diffusion's eps wrapper calls."""

    def __init__(self, unet: UNet2DConditionModel):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, cond):
        return self.unet(x.to(self.unet.dtype), t, encoder_hidden_states=cond.to(self.unet.dtype)).sample.to(x.dtype)


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


class CFGDenoiser(torch.nn.Module):
    """Classifier-free guidance as A1111 does it: one model call on [x, x] with [cond, uncond]."""

    def __init__(self, denoiser: DiscreteEpsDDPMDenoiser, clock: Clock):
        super().__init__()
        self.inner = denoiser
        self.clock = clock
        self.calls: list[tuple[int, float]] = []  # (rows, seconds) of every call: the step costs

    def forward(self, x, sigma, cond, uncond, cond_scale):
        start = self.clock()
        conditional, unconditional = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]),
                                                cond=torch.cat([cond, uncond])).chunk(2)
        denoised = unconditional + (conditional - unconditional) * cond_scale
        self.calls.append((len(x), self.clock() - start))
        return denoised


def sd_alphas_cumprod(device: torch.device) -> torch.Tensor:
    """SD1.5's scaled-linear beta schedule."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float().to(device)


@dataclass
class Bench:
    profile: Profile
    device: torch.device
    repeats: int
    model: CFGDenoiser = field(init=False)
    sigmas: torch.Tensor = field(init=False)

    def __post_init__(self):
        eps = DiscreteEpsDDPMDenoiser(EpsUNet(build_unet(self.profile, self.device)),
                                      sd_alphas_cumprod(self.device), quantize=True)
        self.clock = Clock(self.device)
        self.model = CFGDenoiser(eps, self.clock)
        self.sigmas = sampling.get_sigmas_karras(STEPS, float(eps.sigma_min), float(eps.sigma_max),
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

    def call_rows(self, function, rows: int, noise_kind: str) -> list[int]:
        """The rows of every model call of one run (which also warms the sampler up)."""
        self.model.calls.clear()
        self.sample(function, rows, noise_kind)
        return [call_rows for call_rows, _ in self.model.calls]

    def sampler_seconds(self, plain, hyper, rows: int, noise_kind: str) -> tuple[float, float, list]:
        """Median seconds of the plain and Hyperbatch samplers, timed alternately (warm them up first), and the
        (rows, seconds) of every model call they made."""
        plain_times, hyper_times = [], []
        self.model.calls.clear()
        for _ in range(self.repeats):
            plain_times.append(self.seconds(lambda: self.sample(plain, rows, noise_kind)))
            hyper_times.append(self.seconds(lambda: self.sample(hyper, rows, noise_kind)))
        return statistics.median(plain_times), statistics.median(hyper_times), list(self.model.calls)


# --- measurements -----------------------------------------------------------------------------------------


def measure_speedups(bench: Bench, batches: list[int]) -> tuple[dict[int, float], list[dict]]:
    """Step costs (median seconds of the model calls at each batch size, over every timed run) and, per batch
    and sampler, the measured speed-up and the schedule's limit: its model calls priced at those step costs."""
    results, timed_calls = [], []
    for batch in batches:
        for name, (plain, hyper, noise_kind) in SAMPLERS.items():
            plain_rows, hyper_rows = (bench.call_rows(f, batch, noise_kind) for f in (plain, hyper))
            plain_s, hyper_s, calls = bench.sampler_seconds(plain, hyper, batch, noise_kind)
            timed_calls += calls
            results.append({"batch": batch, "sampler": name, "plain_s": plain_s, "hyper_s": hyper_s,
                            "speedup": plain_s / hyper_s, "plain_rows": plain_rows, "hyper_rows": hyper_rows})
            print(f"  B={batch:3d} {name:13s} plain {plain_s:7.3f} s  hyperbatch {hyper_s:7.3f} s  "
                  f"speed-up {plain_s / hyper_s:5.2f}x", flush=True)
    costs = {rows: statistics.median(s for r, s in timed_calls if r == rows)
             for rows in sorted({rows for rows, _ in timed_calls})}
    for row in results:
        row["limit"] = sum(costs[r] for r in row.pop("plain_rows")) / sum(costs[r] for r in row.pop("hyper_rows"))
        row["share"] = row["speedup"] / row["limit"]
    return costs, results


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
                                                       batch_sizes=[1] * step + [2] * (STEPS - step),
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


def schedule_text(batch: int) -> str:
    sizes = [size for _, size in hb.schedule(batch, STEPS)]
    return " · ".join(f"{sizes.count(size)}@{size}" for size in sorted(set(sizes)))


def tables(costs, speedups, curves, fork_steps, segmenting) -> str:
    lines = ["Cost of one CFG denoiser call (UNet batch 2B), ms: "
             + " · ".join(f"B={rows} {seconds * 1e3:.1f}" for rows, seconds in costs.items()), "",
             "| B | schedule (steps@rows) | sampler | plain s | Hyperbatch s | speed-up | schedule limit | "
             "share of limit |", "|---|---|---|---|---|---|---|---|"]
    for row in speedups:
        lines.append(f"| {row['batch']} | {schedule_text(row['batch'])} | {row['sampler']} | {row['plain_s']:.3f} | "
                     f"{row['hyper_s']:.3f} | {row['speedup']:.2f}× | {row['limit']:.2f}× | {row['share']:.0%} |")
    lines += ["", "Sibling diversity: L2 between two siblings' final latents / L2 between independent seeds, by the "
              "step before which they fork (fork strength η):", "",
              "| sampler | η | " + " | ".join(f"step {step}" for step in fork_steps) + " |",
              "|---|---|" + "---|" * len(fork_steps)]
    for (name, strength), ratios in curves.items():
        lines.append(f"| {name} | {strength:g} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    lines += ["", "Segmenting (fork strength 0: the root's latent vs the plain sampler's) and, for scale, the plain "
              "sampler's row computed alone vs in the batch; both over the L2 between two seeds: "
              + " · ".join(f"{name} {seg:.1e} (alone {floor:.1e})" for name, (seg, floor) in segmenting.items())]
    return "\n".join(lines)


def plot(costs, speedups, curves, fork_steps, title: str) -> None:
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
                   ylabel="speed-up over the plain sampler", title=f"Measured speed-up ({STEPS} steps)")
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
    figure.savefig(PLOT_FILE, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", help="batch sizes (GPU: 8 16 64; CPU: 8 16)")
    parser.add_argument("--repeats", type=int, help="timed repeats after a warm-up (GPU 10, CPU 3)")
    parser.add_argument("--roots", type=int, default=4, help="sibling pairs per diversity point (4)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1: on a shared machine a second thread mostly waits for the first)")
    parser.add_argument("--write", action="store_true", help="append to docs/BENCHMARKS.md and draw the plot")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    profile = SD15 if gpu else TINY
    batches = args.batches or ([8, 16, 64] if gpu else [8, 16])
    bench = Bench(profile, device, args.repeats or (10 if gpu else 3))
    fork_steps = list(range(0, STEPS, 2 if gpu else 4))
    started = time.perf_counter()
    print(f"{profile.name} UNet, {profile.latent_size}² latents, {profile.dtype}, {machine(device)}", flush=True)
    costs, speedups = measure_speedups(bench, batches)
    curves = measure_diversity(bench, fork_steps, args.roots, [0.5, 1.0, 2.0])
    segmenting = measure_segmenting(bench, batches[0])
    text = tables(costs, speedups, curves, fork_steps, segmenting)
    print(text)
    if args.write:
        header = (f"### {datetime.date.today()} — {machine(device)}\n\n"
                  f"`bench/hyperbatch.py`: {profile.name} UNet (diffusers, random weights, block channels "
                  f"{profile.block_out_channels}, {profile.layers_per_block} layer(s) per block), "
                  f"{profile.latent_size}² latents, {str(profile.dtype).removeprefix('torch.')}, CFG {CFG_SCALE:g}, "
                  f"{STEPS} Karras steps, medians of {bench.repeats} repeats after a warm-up, "
                  f"{'wall time' if gpu else 'CPU time of the process (shared cores)'} "
                  f"({time.perf_counter() - started:.0f} s in all).\n")
        append_section(SECTION, header + "\n" + text)
        plot(costs, speedups, curves, fork_steps, f"Hyperbatch on {machine(device)}: {profile.name} UNet, "
             f"{profile.latent_size}² latents, CFG {CFG_SCALE:g}")
        print(f"wrote docs/BENCHMARKS.md and {PLOT_FILE.name}")


if __name__ == "__main__":
    main()
