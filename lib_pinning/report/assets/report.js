"use strict";
// Builds the report from the inlined run data. Every text from the data goes in through textContent (el's
// string children), every path through url(): nothing from the data is ever parsed as HTML.
(function () {
  const data = JSON.parse(document.getElementById("run-data").textContent);
  const root = document.getElementById("report");
  const column = Object.fromEntries(data.columns.map((name, index) => [name, index]));
  const PAGE_SIZES = [10, 25, 50, 100];

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  const url = (...parts) => parts.join("/").split("/").map(encodeURIComponent).join("/");
  const number = (value, digits = 4) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
  const generationFolder = (index) => String(index).padStart(8, "0");
  const link = (text, href) => el("a", { href, textContent: text });
  const note = (text) => el("p", { className: "note", textContent: text });

  // Small images are drawn with visible pixels instead of being blurred when scaled up. Only the table's
  // thumbnails load lazily: the few images above it are the point of the page.
  function picture(src, alt, className, loading = "eager") {
    return el("img", {
      src, alt, title: alt, className, loading, decoding: "async",
      onload: (event) => event.target.classList.toggle("pixelated", event.target.naturalHeight < 96),
      onerror: (event) => event.target.classList.add("missing"),
    });
  }

  function card(title, ...children) {
    return el("section", { className: "card" }, el("h2", { textContent: title }), ...children);
  }

  function copyButton(text) {
    const button = el("button", { type: "button", className: "copy", textContent: "Copy" });
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(text);
      } catch (error) { // file:// pages may not get the clipboard API: fall back to a selection
        const area = el("textarea", { value: text, className: "offscreen" });
        document.body.append(area);
        area.select();
        document.execCommand("copy");
        area.remove();
      }
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    });
    return button;
  }

  function promptBlock(label, text) {
    return el("div", { className: "prompt-block" },
      el("div", { className: "prompt-head" }, el("span", { className: "label", textContent: label }), copyButton(text)),
      el("pre", { className: "prompt", textContent: text || "(empty)" }));
  }

  function images(folder, caption) {
    return el("div", { className: "images" }, ...data.seeds.map((seed) =>
      el("figure", {}, picture(url(folder, "seed-" + seed + ".png"), caption + ", seed " + seed, "image"),
        el("figcaption", { textContent: "seed " + seed }))));
  }

  function fileLinks(folder) {
    return el("span", { className: "files" }, link("GIF", url(folder, "summary.gif")), " · ",
      link("stats", url(folder, "stats.json")), " · ", link("loss plot", url(folder, "loss_plot.png")));
  }

  function header() {
    const evaluations = data.generations.reduce((sum, generation) => sum + generation.evaluations, 0);
    const facts = [["generations", String(data.generations.length)], ["evaluations", String(evaluations)]];
    if (data.baseline) facts.push(["unperturbed loss", number(data.baseline.loss)]);
    if (data.best) {
      facts.push(["best loss", number(data.best.loss)]);
      if (data.baseline && data.baseline.loss > 0) {
        facts.push(["improvement", number(100 * (1 - data.best.loss / data.baseline.loss), 1) + " %"]);
      }
    }
    return el("header", {},
      el("h1", { textContent: "Prompt pinning report" },
        el("span", { className: "status status-" + data.status, textContent: data.status })),
      data.ending && data.ending.message ? el("p", { className: "message",
        textContent: data.ending.cause + ": " + data.ending.message }) : null,
      ...data.notices.map((text) => el("p", { className: "notice", textContent: "Notice: " + text })),
      el("dl", { className: "facts" }, ...facts.map(([name, value]) =>
        el("div", {}, el("dt", { textContent: name }), el("dd", { textContent: value })))));
  }

  function pinned() {
    const best = data.best;
    if (!best) return card("Pinned prompt", el("p", { textContent: "No individual was scored." }));
    const origin = best.generation < 0 ? "the unperturbed prompt (nothing beat it)" : "generation " + best.generation;
    return card("Pinned prompt",
      note("Loss " + number(best.loss) + ", from " + origin +
        ". Paste it into txt2img with the same seeds and settings to get these images."),
      promptBlock("Prompt", best.prompt),
      promptBlock("Negative prompt", best.negative_prompt),
      images(best.images, "pinned prompt"),
      best.folder ? fileLinks(best.folder) : null);
  }

  function baseline() {
    const base = data.baseline;
    if (!base) return null;
    return card("Unperturbed prompt",
      note("Loss " + number(base.loss) + ": where the search started, your prompt as you wrote it."),
      promptBlock("Prompt", data.prompt),
      promptBlock("Negative prompt", data.negative_prompt),
      images(base.folder, "unperturbed prompt"),
      data.targets.length ? el("h3", { textContent: "Targets" }) : null,
      data.targets.length ? el("div", { className: "images targets" }, ...data.targets.map((name) =>
        el("figure", {}, picture(url("targets", name), "target " + name, "image"),
          el("figcaption", { textContent: name })))) : null,
      (data.options.tags || []).length ? note("Target tags: " + data.options.tags.join(", ")) : null,
      data.frozen.length ? note("Passed through unchanged: " + data.frozen.join(", ")) : null);
  }

  function plots() {
    if (!data.plots.length) return null;
    return card("Plots", ...(data.plots_missing || []).map(note), el("div", { className: "plots" }, ...data.plots.map((plot) =>
      el("figure", {}, el("a", { href: url(plot.file) }, picture(url(plot.file), plot.title, "plot")),
        el("figcaption", { textContent: plot.title })))));
  }

  // -- the individuals table: filtered, sorted and paged, so only one page of rows and thumbnails exists --
  const view = { key: "loss", ascending: true, page: 0, size: 25, generation: "all" };
  const bestFolder = data.best && data.best.id !== null ? data.best.folder : null;
  const worstLoss = Math.max(0, ...data.individuals.map((values) => values[column.loss]));

  function visibleRows() {
    const rows = view.generation === "all" ? data.individuals.slice()
      : data.individuals.filter((values) => String(values[column.generation]) === view.generation);
    const index = column[view.key];
    const sign = view.ascending ? 1 : -1;
    return rows.sort((a, b) => sign * (a[index] < b[index] ? -1 : a[index] > b[index] ? 1 : 0));
  }

  function lossCell(loss) {
    const width = worstLoss > 0 ? Math.round(100 * loss / worstLoss) : 0;
    return el("td", { className: "num" }, el("div", { className: "loss" },
      el("span", { textContent: number(loss) }), el("span", { className: "bar", style: "width:" + width + "%" })));
  }

  function row(values) {
    const id = values[column.id];
    const folder = values[column.folder];
    const isBest = folder === bestFolder;
    const prompt = values[column.prompt];
    const negative = values[column.negative_prompt];
    return el("tr", { className: isBest ? "best" : "" },
      el("td", { className: "num", textContent: String(values[column.generation]) }),
      el("td", { className: "id" }, el("code", { textContent: id }),
        isBest ? el("span", { className: "badge", textContent: "best" }) : null),
      lossCell(values[column.loss]),
      el("td", {}, picture(url(folder, "thumbnails.png"), "images of " + id, "strip", "lazy")),
      el("td", { className: "prompt-cell", title: prompt + (negative ? "\nNegative prompt: " + negative : "") },
        el("div", { textContent: prompt })),
      el("td", { className: "num", textContent: number(values[column.seconds_render], 2) }),
      el("td", {}, fileLinks(folder)));
  }

  function button(className, text, title, onclick) {
    return el("button", { type: "button", className, textContent: text, title, onclick });
  }

  function choice(className, options, selected, onchange) {
    return el("select", { className, onchange: (event) => onchange(event.target.value) },
      ...options.map(([value, text]) => el("option", { value, textContent: text, selected: value === selected })));
  }

  function pagerBar(redraw) {
    const go = (page) => () => { view.page = page(); redraw(); };
    const pager = el("div", { className: "pager", id: "pager" });
    pager.append(button("first", "«", "first page", go(() => 0)),
      button("previous", "‹", "previous page", go(() => view.page - 1)),
      el("span", { className: "page" }),
      button("next", "›", "next page", go(() => view.page + 1)),
      button("last", "»", "last page", go(() => Number(pager.dataset.pages) - 1)),
      el("span", { className: "range" }));
    return pager;
  }

  function showPage(body, pager) {
    const rows = visibleRows();
    const pages = Math.max(1, Math.ceil(rows.length / view.size));
    view.page = Math.min(Math.max(view.page, 0), pages - 1);
    const start = view.page * view.size;
    const end = Math.min(start + view.size, rows.length);
    body.replaceChildren(...rows.slice(start, end).map(row));
    Object.assign(pager.dataset, { total: String(rows.length), pages: String(pages) });
    pager.querySelector(".range").textContent = rows.length
      ? "Showing " + (start + 1) + "–" + end + " of " + rows.length + " individuals" : "No individuals";
    pager.querySelector(".page").textContent = "Page " + (view.page + 1) + " of " + pages;
    for (const name of ["first", "previous"]) pager.querySelector("." + name).disabled = view.page === 0;
    for (const name of ["next", "last"]) pager.querySelector("." + name).disabled = view.page === pages - 1;
  }

  function sortableHeaders(redraw) {
    const titles = { generation: "Gen", id: "Individual", loss: "Loss", seconds_render: "Render s" };
    const headers = Object.entries(titles).map(([key, title]) =>
      el("th", { className: "sortable", textContent: title, title: "sort by " + title, dataset: { key } }));
    const mark = () => headers.forEach((th) => th.setAttribute("aria-sort",
      th.dataset.key !== view.key ? "none" : view.ascending ? "ascending" : "descending"));
    for (const th of headers) {
      th.addEventListener("click", () => {
        view.ascending = view.key === th.dataset.key ? !view.ascending : true;
        view.key = th.dataset.key;
        view.page = 0;
        mark();
        redraw();
      });
    }
    mark();
    return headers;
  }

  function individuals() {
    const body = el("tbody");
    const redraw = () => showPage(body, pager);
    const pager = pagerBar(redraw);
    const refilter = (change) => (value) => { change(value); view.page = 0; redraw(); };
    const generations = choice("generation-filter", [["all", "all generations"],
      ...data.generations.map((generation) => [String(generation.index), "generation " + generation.index])],
      view.generation, refilter((value) => { view.generation = value; }));
    const sizes = choice("page-size", PAGE_SIZES.map((size) => [String(size), size + " per page"]),
      String(view.size), refilter((value) => { view.size = Number(value); }));
    const [generation, id, loss, render] = sortableHeaders(redraw);
    const head = el("tr", {}, generation, id, loss, el("th", { textContent: "Images" }),
      el("th", { textContent: "Prompt" }), render, el("th", { textContent: "Files" }));
    redraw();
    return card("Individuals", el("div", { className: "controls" }, generations, sizes),
      el("div", { className: "table-wrap" }, el("table", { className: "individuals" }, el("thead", {}, head), body)),
      pager);
  }

  function generationsCard() {
    if (!data.generations.length) return null;
    const numeric = (text) => el("td", { className: "num", textContent: text });
    const rows = data.generations.map((generation) => el("tr", {}, numeric(String(generation.index)),
      numeric(number(generation.best_loss)), numeric(number(generation.mean_loss)), numeric(number(generation.sigma)),
      el("td", {}, link("loss distributions", url(generationFolder(generation.index), "generation_loss_plot.png")))));
    const head = el("tr", {},
      ...["Gen", "Best", "Mean", "Sigma", "Plot"].map((text) => el("th", { textContent: text })));
    return card("Generations", el("details", {},
      el("summary", { textContent: data.generations.length + " generations: best and mean loss, step size" }),
      el("table", { className: "generations" }, el("thead", {}, head), el("tbody", {}, ...rows))));
  }

  // A prompt evolution run: each word raised (each tag present, when it evolves tags) among the chosen against all
  // rendered (lib_pinning.winners).
  function winners() {
    if (!data.winners.length) return null;
    const tags = data.winners[0].measure === "present";
    const counted = tags ? "Present" : "Raised";
    const numeric = (text) => el("td", { className: "num", textContent: text });
    const rows = data.winners.map((word) => el("tr", {},
      el("td", { textContent: word.word + (word.side === "negative" ? " (negative prompt)" : "") }),
      numeric(word.chosen_raised + " of " + word.chosen), numeric(word.rendered_raised + " of " + word.rendered),
      numeric(Number(word.p_value).toPrecision(3)),
      numeric(number(word.interval[0], 2) + " – " + number(word.interval[1], 2))));
    const head = el("tr", {}, ...[tags ? "Tag" : "Word", counted + " among the chosen", counted + " among all rendered",
      "p", "95 % interval (chosen)"].map((text) => el("th", { textContent: text })));
    return card(tags ? "Which tags win" : "Which words win",
      note((tags ? "Tags present in the prompt" : "Words whose weight rose above the prompt's") +
        ", among the individuals chosen and among all rendered; p: one-sided exact test of \"" +
        (tags ? "present" : "raised") + " more often among the chosen\", within each generation."),
      el("table", { className: "winners" }, el("thead", {}, head), el("tbody", {}, ...rows)));
  }

  function flatten(value, prefix, out) {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? prefix + "." + key : key, out);
    } else {
      out.push([prefix, Array.isArray(value) ? JSON.stringify(value) : String(value)]);
    }
    return out;
  }

  function options() {
    const rows = flatten(data.options, "", []).map(([key, value]) =>
      el("tr", {}, el("th", { textContent: key }), el("td", {}, el("code", { textContent: value }))));
    return card("Options", el("details", {}, el("summary", { textContent: "Every option of this run" }),
      el("table", { className: "options" }, el("tbody", {}, ...rows))),
      note("Rebuild this page and every plot from run.json and the saved images: " +
        "python -m lib_pinning report RUN_DIR"));
  }

  const sections = [header(), pinned(), baseline(), winners(), plots(), individuals(), generationsCard(), options()];
  root.append(...sections.filter(Boolean));
  window.reportReadyMs = performance.now();
  document.documentElement.dataset.ready = "true";
})();
