import dataclasses
import errno
import hashlib
import json
import re
import shutil
import threading
import time

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from lib_pinning.cli import main
from lib_pinning.engine import run_pinning
from lib_pinning.record import read_record
from lib_pinning.rendering import Rendered
from lib_pinning.report import ReportRecorder, files, html, run_figures, worker
from lib_pinning.report.context import gene_labels
from lib_pinning.report.figures import generation_figure, png
from lib_pinning.report.images import FRAME_MILLISECONDS, THUMBNAIL_HEIGHT, gif_bytes
from report_support import HOSTILE, StopAt, shared_small_run, small_job, small_run, synthetic_record

# What a rebuild reads rather than writes (the best/ images it writes again, from the best individual's).
SOURCES = re.compile(r"run\.json|targets/.*|(baseline|\d{8}/[^/]+)/seed-\d+\.png")


@pytest.fixture(scope="module")
def run():
    folder = shared_small_run()
    return folder, read_record(folder)


def individuals(record):
    return [(generation, individual) for generation in record.generations for individual in generation.individuals]


def folder_of(run_dir, generation, individual):
    return run_dir / individual.folder


def saved_images(folder, seeds):
    return np.stack([np.asarray(Image.open(folder / f"seed-{seed}.png").convert("RGB")) for seed in seeds])


def gif_frames_in_time(path):
    """The GIF's frames, each repeated once per FRAME_MILLISECONDS it is shown (Pillow merges equal frames)."""
    frames = iio.imread(path, index=None, extension=".gif")[..., :3]
    durations = [iio.immeta(path, index=i, extension=".gif")["duration"] for i in range(len(frames))]
    return np.concatenate([np.repeat(frame[None], round(duration / FRAME_MILLISECONDS), 0)
                           for frame, duration in zip(frames, durations)])


def derived_files(run_dir):
    paths = [path for path in sorted(run_dir.rglob("*")) if path.is_file()]
    return {str(path.relative_to(run_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in paths if not SOURCES.fullmatch(str(path.relative_to(run_dir)))}


def test_each_individual_has_its_images_with_infotext_and_stats_equal_to_run_json(run):
    run_dir, record = run
    seeds = record.render.seeds
    pairs = record.objective.pairs
    assert len(individuals(record)) == 12
    for generation, individual in individuals(record):
        folder = folder_of(run_dir, generation, individual)
        stats = json.loads((folder / files.STATS).read_text())
        assert stats["loss"] == individual.loss and stats["prompt"] == individual.prompt
        assert [image["loss"] for image in stats["images"]] == individual.image_losses
        assert [image["seed"] for image in stats["images"]] == seeds
        assert [pair["loss"] for pair in stats["pairs"]] == individual.pair_losses
        assert len(stats["pairs"]) == len(pairs) == 15  # every pair of 3 targets ∪ 3 images
        assert stats["pairs"][0]["images"] == ["target 0", "target 1"]
        assert stats["pairs"][-1]["images"] == [f"seed {seeds[1]}", f"seed {seeds[2]}"]
        assert [w["gene"] for w in stats["weights"]] == individual.weights
        assert stats["weights"][-1]["word"] == "dark (negative)"
        assert stats["seconds_render"] == individual.seconds_render and stats["seeds"] == seeds
        assert stats["render"]["sampler"] == "DPM++ 2M" and stats["render"]["steps"] == 4
        assert stats["cma_after_generation"] == dataclasses.asdict(generation.cma)
        for seed in seeds:
            info = Image.open(folder / f"seed-{seed}.png").info["parameters"]
            assert info.startswith(individual.prompt) and f"Seed: {seed}," in info and "Steps: 4" in info


def _smooth_images(count, height, width, seed):
    """Photo-like test pictures: bilinearly enlarged colour noise."""
    small = np.random.default_rng(seed).integers(0, 256, (count, 3, height // 8 + 1, width // 8 + 1), np.uint8)
    enlarged = torch.nn.functional.interpolate(torch.from_numpy(small).float(), size=(height, width),
                                               mode="bilinear", align_corners=True)
    return enlarged.round().byte().permute(0, 2, 3, 1).contiguous().numpy()


def _gif_cases():
    smooth = _smooth_images(3, 512, 512, seed=0)
    flat = np.zeros((2, 9, 7, 3), np.uint8)
    flat[1, :, :3] = (10, 200, 30)
    return {"three 512² pictures": smooth, "one picture": smooth[:1, :64, :48],
            "a repeated picture": smooth[[0, 0, 1], :40, :40], "two flat colours, 7x9": flat,
            "odd size": _smooth_images(4, 33, 65, seed=1)}


@pytest.mark.parametrize("name", list(_gif_cases()))
def test_the_gif_holds_every_picture_exactly_in_its_shared_palette(name):
    pixels = _gif_cases()[name]
    count, height, width, _ = pixels.shape
    stacked = Image.fromarray(pixels.reshape(count * height, width, 3))
    quantized = stacked.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).convert("RGB")
    data = gif_bytes(pixels)
    assert np.array_equal(gif_frames_in_time(data), np.asarray(quantized).reshape(pixels.shape))
    assert iio.immeta(data, index=0, extension=".gif")["loop"] == 0  # endless


def test_the_gif_shows_the_images_in_seed_order_at_render_size(run):
    run_dir, record = run
    seeds = record.render.seeds
    for generation, individual in individuals(record):
        folder = folder_of(run_dir, generation, individual)
        images = saved_images(folder, seeds)
        frames = gif_frames_in_time(folder / files.GIF)
        assert frames.shape == images.shape == (3, 16, 16, 3)
        error = np.abs(frames.astype(int) - images.astype(int)).mean(axis=(1, 2, 3))
        assert error.max() < 6  # GIF palettes quantize; the order must be exact
        for k, frame in enumerate(frames):
            distances = np.abs(images.astype(int) - frame.astype(int)).mean(axis=(1, 2, 3))
            assert distances[k] == distances.min()


def test_the_thumbnail_strip_holds_every_image(run):
    run_dir, record = run
    generation, individual = individuals(record)[0]
    strip = Image.open(folder_of(run_dir, generation, individual) / files.THUMBNAILS)
    assert strip.size == (3 * 16, 16)  # render size 16 is below THUMBNAIL_HEIGHT: never upscaled
    assert THUMBNAIL_HEIGHT > 16
    images = saved_images(folder_of(run_dir, generation, individual), record.render.seeds)
    assert np.array_equal(np.asarray(strip.convert("RGB")), np.concatenate(list(images), axis=1))


def test_the_cma_plot_shows_the_logbook_of_run_json(run):
    run_dir, record = run
    figure = run_figures.cma_figure(record)
    lines = {line.get_gid(): line for axes in figure.axes for line in axes.get_lines()}
    evaluations = np.cumsum([g.evaluations for g in record.generations])
    expected = {"best loss": [g.best_loss for g in record.generations],
                "mean loss": [g.mean_loss for g in record.generations],
                "sigma": [g.cma.sigma for g in record.generations],
                "axis ratio": [g.cma.axis_ratio for g in record.generations]}
    genes = len(record.generations[0].cma.centroid)
    for key, name in (("centroid", "centroid"), ("scales", "scale"), ("stds", "std")):
        for gene in range(genes):
            expected[f"{name} {gene}"] = [getattr(g.cma, key)[gene] for g in record.generations]
    assert set(expected) <= set(lines)
    for gid, values in expected.items():
        assert np.array_equal(lines[gid].get_xdata(), evaluations)
        assert np.array_equal(lines[gid].get_ydata(), values), gid
    assert [g.sigma for g in record.generations] == expected["sigma"]
    assert (run_dir / files.CMA_PLOT).read_bytes() == png(figure)  # the file is this figure
    assert len(figure.axes) == 4


def test_history_looseness_and_generation_plots_show_run_json(run):
    run_dir, record = run
    losses = [i.loss for _, i in individuals(record)]
    history = {line.get_gid(): line for line in run_figures.history_figure(record).axes[0].get_lines()}
    assert np.array_equal(history["loss"].get_ydata(), losses)
    assert np.array_equal(history["best so far"].get_ydata(), np.minimum.accumulate(losses))
    assert history["baseline"].get_ydata()[0] == record.baseline.loss

    looseness = run_figures.looseness_figure(record)
    weight_axes = looseness.axes[0]
    assert [label.get_text() for label in weight_axes.get_yticklabels()] == gene_labels(record)
    widths = [bar.get_width() for bar in weight_axes.patches]
    base = record.genome.base_weights
    assert widths == pytest.approx([abs(b + g) for b, g in zip(base, record.best.weights)])

    for generation in record.generations:
        assert (files.generation_dir(run_dir, generation.index) / files.GENERATION_PLOT).is_file()
        sorted_losses = generation_figure(generation).axes[0].get_lines()[0].get_ydata()
        assert np.array_equal(sorted_losses, sorted(i.loss for i in generation.individuals))
    for name in (files.HISTORY_PLOT, files.LOOSENESS_PLOT):
        assert Image.open(run_dir / name).format == "PNG"
    assert not (run_dir / files.FRONT_PLOT).exists()  # the size limiter is off


def test_the_front_plot_highlights_the_pareto_front_when_the_size_limiter_is_on(tmp_path):
    small_run(tmp_path / "run", "a red circle", size_limit=0.3, generations=1)
    record = read_record(tmp_path / "run")
    assert (tmp_path / "run" / files.FRONT_PLOT).is_file()
    lines = {line.get_gid(): line for line in run_figures.front_figure(record).axes[0].get_lines()}
    distances = [np.linalg.norm(i.weights) for _, i in individuals(record)]
    assert np.allclose(lines["individuals"].get_xdata(), distances)
    front_losses = lines["front"].get_ydata()
    assert list(front_losses) == sorted(front_losses, reverse=True) and front_losses[-1] == min(
        i.loss for _, i in individuals(record))


def test_pareto_front():
    distances = np.array([0.0, 1.0, 2.0, 3.0, 1.5])
    losses = np.array([5.0, 3.0, 4.0, 1.0, 3.0])
    assert run_figures.pareto_front(distances, losses).tolist() == [0, 1, 3]


def embedded_json(page):
    match = re.search(r'<script type="application/json" id="run-data">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


def test_index_inlines_the_data_once_escapes_user_text_and_fetches_nothing(run):
    run_dir, record = run
    page = (run_dir / files.INDEX).read_text(encoding="utf-8")
    assert page.count('type="application/json"') == 1 and page.count("<script") == 2
    assert page.count("</script>") == 2  # the hostile prompt cannot close a script element
    assert HOSTILE not in page and "<img" not in page
    assert "\\u003c/script\\u003e\\u003cimg src=x onerror=alert(1)\\u003e" in page
    assert not re.search(r"https?://", page)
    data = embedded_json(page)
    assert data["prompt"] == f"a red circle {HOSTILE}"
    column = {name: index for index, name in enumerate(data["columns"])}
    assert [row[column["id"]] for row in data["individuals"]] == [i.id for _, i in individuals(record)]
    assert [row[column["folder"]] for row in data["individuals"]] == [i.folder for _, i in individuals(record)]
    assert [row[column["loss"]] for row in data["individuals"]] == [i.loss for _, i in individuals(record)]
    assert data["best"]["prompt"] == record.best.prompt and data["best"]["folder"] == record.best.folder
    assert [plot["file"] for plot in data["plots"]] == [files.CMA_PLOT, files.HISTORY_PLOT, files.LOOSENESS_PLOT]


def test_index_stays_small_with_2000_individuals(tmp_path):
    record = synthetic_record(generations=125, per_generation=16)
    page = html.index_html(tmp_path, record, [])
    assert len(embedded_json(page)["individuals"]) == 2000
    assert len(page.encode()) < 1.5e6  # about 300 prompt-heavy bytes per individual and nothing per image


def test_best_images_are_the_best_individuals(run):
    run_dir, record = run
    source = run_dir / record.best.folder
    for seed in record.render.seeds:
        assert (run_dir / files.BEST / f"seed-{seed}.png").read_bytes() == (source / f"seed-{seed}.png").read_bytes()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run stopped like Ctrl-C in its third generation: two generations recorded."""
    run_dir = tmp_path_factory.mktemp("interrupted")
    job = small_job("a red circle", "dark", seeds=(0, 1, 2), wrap=StopAt(4), run_dir=run_dir,
                    generations=5)
    assert run_pinning(job).status == "interrupted"
    return run_dir


def test_report_rebuilds_identical_files_for_an_interrupted_run(interrupted, tmp_path, capsys):
    run_dir = shutil.copytree(interrupted, tmp_path / "run")
    before = derived_files(run_dir)
    assert len(read_record(run_dir).generations) == 2
    assert {files.INDEX, files.CMA_PLOT, "best/seed-0.png", "00000001/0001-003/summary.gif"} <= before.keys()
    for name in before:
        (run_dir / name).unlink()
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run_dir / files.INDEX}"
    assert derived_files(run_dir) == before


def test_report_of_a_crashed_run_lists_individuals_whose_images_were_never_saved(interrupted, tmp_path, capsys):
    run_dir = shutil.copytree(interrupted, tmp_path / "run")
    record = read_record(run_dir)
    record.status, record.ending = "running", None  # the process died: no final record, the writer lagged
    (run_dir / "run.json").write_text(record.to_json())
    last = record.generations[-1]
    for individual in last.individuals:
        (run_dir / individual.folder / "seed-1.png").unlink()
    (run_dir / files.INDEX).unlink()
    assert main(["report", str(run_dir)]) == 0
    notice = capsys.readouterr().err
    assert "4 individuals have no saved images" in notice and last.individuals[0].id in notice
    assert embedded_json((run_dir / files.INDEX).read_text())["status"] == "running"
    assert (run_dir / last.individuals[0].folder / files.STATS).is_file()


def _edited(change):
    """The shared run's run.json, edited as a user or a crash might: `change(data)` edits the parsed JSON."""
    data = json.loads((shared_small_run() / "run.json").read_text())
    change(data)
    return json.dumps(data)


def _set(path, value):
    def change(data):
        *parents, last = path
        for key in parents:
            data = data[key]
        data[last] = value
    return change


DAMAGED = {
    "missing": (None, "does not exist"),
    "truncated": (lambda: (shared_small_run() / "run.json").read_text()[:500], "is not complete JSON"),
    "binary": (lambda: bytes(range(256)) * 4, "is not text (not UTF-8)"),
    "a list": (lambda: "[]", "expected a JSON object, got a list"),
    "null loss": (lambda: _edited(_set(["generations", 1, "individuals", 2, "loss"], None)),
                  "generations[1].individuals[2].loss: expected a number, got null"),
    "string loss": (lambda: _edited(_set(["generations", 0, "individuals", 0, "loss"], "0.5")),
                    "generations[0].individuals[0].loss: expected a number, got '0.5'"),
    "string index": (lambda: _edited(_set(["generations", 2, "index"], "2")),
                     "generations[2].index: expected a whole number, got '2'"),
    "null best": (lambda: _edited(_set(["best"], None)), "best: missing (null) although the unperturbed prompt"),
    "empty cma": (lambda: _edited(_set(["generations", 0, "cma"], {})), "generations[0].cma.centroid: missing"),
    "NaN token": (lambda: _edited(_set(["baseline", "loss"], 0.5)).replace('"loss": 0.5', '"loss": NaN', 1),
                  "baseline.loss: expected a finite number, got nan"),
    "a folder named run.json": ("folder", "run.json is a folder, not a run record"),
    "escaping folder": (lambda: _edited(_set(["generations", 0, "individuals", 0, "folder"], "../../escape")),
                        "generations[0].individuals[0].folder: expected a folder inside the run folder"),
    "another file": (lambda: '{"version": 1, "options": {}}', "format: expected 'sd-prompt-pinning run', got None"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_report_of_a_missing_or_damaged_run_json_is_one_line_naming_the_field_and_exit_2(tmp_path, capsys, case):
    content, message = DAMAGED[case]
    if content == "folder":
        (tmp_path / "run.json").mkdir()
    elif content is not None:
        made = content()
        (tmp_path / "run.json").write_bytes(made if isinstance(made, bytes) else made.encode())
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / files.INDEX).exists()


def test_a_full_disk_fails_the_run_with_a_message_and_keeps_every_generation(tmp_path, monkeypatch, caplog):
    write_bytes = files.write_bytes

    def disk_full_for_gifs(path, data):
        if path.name == files.GIF:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_bytes(path, data)

    monkeypatch.setattr(files, "write_bytes", disk_full_for_gifs)
    result = small_run(tmp_path / "run", "a red circle", generations=2)
    record = read_record(tmp_path / "run")
    assert result.status == record.status == "failed" and record.ending.cause == "report"
    message = record.ending.message
    assert "report is incomplete" in message and "No space left on device" in message
    assert "9 report job(s) failed" in message  # the baseline's GIF and each of the 8 individuals'
    assert len(record.generations) == 2 and record.best is not None
    assert (tmp_path / "run" / files.INDEX).is_file()
    errors = [r for r in caplog.records if r.name == worker.__name__]
    assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()


def test_hooks_return_at_once_and_the_writer_uses_copies(tmp_path, monkeypatch):
    started = threading.Event()
    release = threading.Event()
    from lib_pinning.report import writers
    write_images = writers.write_images

    def held_images(*args):  # keeps the writer busy until the test has changed what the engine handed over
        started.set()
        release.wait(10)
        write_images(*args)

    monkeypatch.setattr("lib_pinning.report.recorder.write_images", held_images)
    record = synthetic_record(generations=1, per_generation=2, genes=3, seeds=3)
    recorder = ReportRecorder(tmp_path)
    recorder.on_start(record, 3)
    images = torch.rand(3, 3, 8, 8)
    recorder.on_baseline(record, Rendered(images), None)
    started.wait(10)
    generation = record.generations[0]
    began = time.perf_counter()
    recorder.on_generation(record, generation, [Rendered(images.clone()) for _ in generation.individuals])
    assert time.perf_counter() - began < 0.5  # nothing was encoded or plotted on the caller's thread
    original_loss = generation.individuals[0].loss
    generation.individuals[0].loss = 99.0
    images.zero_()
    release.set()
    recorder.on_finish(record, None)
    stats = json.loads((tmp_path / generation.individuals[0].folder / files.STATS).read_text())
    assert stats["loss"] == original_loss
    assert np.asarray(Image.open(tmp_path / files.BASELINE / "seed-0.png")).max() > 0


def test_the_writer_logs_the_first_failure_once_and_counts_the_rest(caplog):
    writer = worker.BackgroundWriter()
    for name in ("a.png", "b.png"):
        writer.submit(name, lambda n=name: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left", n)))
    done = []
    writer.submit("c.png", done.append, True)
    writer.finish()
    assert done == [True]  # later jobs still run
    assert writer.failure().startswith("2 report job(s) failed, the first: could not write a.png: OSError")
    assert len([r for r in caplog.records if r.name == worker.__name__]) == 1


def test_the_writer_makes_the_search_wait_when_its_pixels_would_exceed_the_byte_budget():
    release = threading.Event()
    written = []
    writer = worker.BackgroundWriter(max_jobs=100, max_bytes=1000)
    writer.submit("held", lambda pixels: (release.wait(10), written.append(len(pixels))), np.zeros(600, np.uint8))
    writer.submit("fits", lambda pixels: written.append(len(pixels)), np.zeros(400, np.uint8))
    one_byte = ("over", lambda pixels: written.append(len(pixels)), np.zeros(1, np.uint8))
    over = threading.Thread(target=writer.submit, args=one_byte)
    over.start()
    over.join(0.3)
    assert over.is_alive()  # 1001 bytes would be pending: the caller waits
    release.set()
    over.join(10)
    assert not over.is_alive()
    writer.finish()
    assert written == [600, 400, 1]
    # The bytes of written jobs are free again: 600 + 400 fit beside each other once more.
    release.clear()
    writer.submit("held again", lambda pixels: release.wait(10), np.zeros(600, np.uint8))
    fits = threading.Thread(target=writer.submit, args=("fits again", lambda pixels: None, np.zeros(400, np.uint8)))
    fits.start()
    fits.join(5)
    assert not fits.is_alive()
    release.set()
    writer.finish()


def test_a_job_larger_than_the_byte_budget_still_runs_once_the_writer_is_idle():
    written = []
    writer = worker.BackgroundWriter(max_jobs=100, max_bytes=10)
    for size in (5, 50, 5):
        writer.submit(f"{size} bytes", lambda pixels: written.append(pixels.nbytes), np.zeros(size, np.uint8))
    writer.finish()
    assert written == [5, 50, 5]


def test_the_writer_bounds_its_queue_in_jobs_too():
    release = threading.Event()
    writer = worker.BackgroundWriter(max_jobs=2, max_bytes=10**9)
    writer.submit("held", release.wait, 10)
    writer.submit("second", lambda: None)
    third = threading.Thread(target=writer.submit, args=("third", lambda: None))
    third.start()
    third.join(0.3)
    assert third.is_alive()
    release.set()
    third.join(10)
    writer.finish()
    assert not third.is_alive()


def test_a_job_that_exits_does_not_leave_the_queue_without_its_writer():
    writer = worker.BackgroundWriter(max_jobs=2)
    done = []

    def exits():
        raise SystemExit(1)

    writer.submit("exits", exits)
    for index in range(3):
        submitted = threading.Thread(target=writer.submit, args=(f"job {index}", done.append, index))
        submitted.start()
        submitted.join(5)
        assert not submitted.is_alive()
    writer.finish()
    assert done == [0, 1, 2] and writer.failure().startswith("1 report job(s) failed, the first: could not write exits")


def test_labels_drawn_from_the_users_words_are_literal_text(tmp_path):
    # matplotlib reads "$...$" as math: "$^$" made every run plot fail (and with it the report).
    result = small_run(tmp_path / "run", "price $^$ tag, blue sky", punctuation=True, generations=1)
    record = read_record(tmp_path / "run")
    assert result.status == "done" and "$^$" in record.genome.words
    labels = [label.get_text() for label in run_figures.looseness_figure(record).axes[0].get_yticklabels()]
    assert "$^$" in labels
    assert all((tmp_path / "run" / name).is_file() for name in (files.CMA_PLOT, files.LOOSENESS_PLOT))


def test_a_long_prompts_run_plots_name_the_words_at_the_ends_and_stay_small():
    # A 500-word prompt drew 1,500 lines, 1,000 labels and 140-inch figures: minutes per plot.
    record = synthetic_record(generations=2, per_generation=3, genes=500)
    cma = run_figures.cma_figure(record)
    looseness = run_figures.looseness_figure(record)
    limit = run_figures.MAX_LABELLED
    for figure in (cma, looseness):
        assert figure.get_figheight() <= 0.3 * limit + 2
    annotations = [text for axes in cma.axes for text in axes.texts]
    assert len(annotations) == 2 * limit  # the centroid and std panels each name `limit` words
    labels = [label.get_text() for label in looseness.axes[0].get_yticklabels()]
    spread = np.array(record.generations[-1].cma.stds)
    order = np.argsort(spread)
    expected = {f"word{i}" for i in np.concatenate([order[:limit // 2], order[-limit // 2:]])}
    assert set(labels) == expected and "40 of 500 words" in looseness._suptitle.get_text()
