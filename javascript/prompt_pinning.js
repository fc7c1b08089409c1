// Tooltips of the "Prompt pinning" script's controls (A1111 shows titles[label] on hover).
// The keys are the labels in lib_pinning/webui/controls.py; tests/test_webui_controls.py checks that they match.
(function() {
    if (typeof titles === "undefined") {
        return;
    }
    Object.assign(titles, {
        "Target images": "Images the pinned prompt should reproduce. Leave empty to pin the prompt to its own first batch. Resized to the output size.",
        "Pinning loss": "pairwise: mean + std of the FLIP error of every pair of targets and images (the original's loss). target: mean FLIP error of each image to each target. consistency: only the images of a batch agree with each other.",
        "Gene per": "word: one weight per word of the prompt and negative prompt. tag: one weight per comma-separated chunk (fewer genes, faster).",
        "Generations (-1: automatic)": "Number of CMA-ES generations. -1: 16 x floor(ln N) for N genes, at least 16.",
        "CMA seed (-1: image seed)": "Seed of the evolution strategy's sampling. -1: the image seed. The same seeds and inputs give the same run.",
        "Initial sigma": "Initial standard deviation of the weights CMA-ES tries around the prompt (0.5; the original used 0.05).",
        "Initial centroid radius": "0 starts at the prompt as written; r > 0 starts at a point drawn uniformly within +-r of it (the original used 0.25).",
        "Log CMA-ES to the console": "Print the CMA-ES logbook (one line per generation) to the WebUI's console.",
        "Lambda: children per generation (-1: 4 + 3 ln N)": "Individuals rendered per generation; each is one batch of images. -1: 4 + 3 ln N.",
        "Mu: parents (-1: lambda / 2)": "Individuals kept to build the next generation. -1: lambda / 2.",
        "Recombination weights": "How the mu parents are weighted when recombined: superlinear (default), linear or equal.",
        "cs (-1: DEAP formula)": "CMA-ES step-size cumulation constant. -1: DEAP's formula.",
        "damps (-1: DEAP formula)": "CMA-ES step-size damping. -1: DEAP's formula.",
        "ccum (-1: DEAP formula)": "CMA-ES covariance cumulation constant. -1: DEAP's formula.",
        "ccov1 (-1: DEAP formula)": "CMA-ES rank-one covariance learning rate. -1: DEAP's formula.",
        "ccovmu (-1: DEAP formula)": "CMA-ES rank-mu covariance learning rate. -1: DEAP's formula.",
        "Initial covariance matrix (JSON rows; blank: identity)": "Initial covariance as N rows of N numbers in JSON, e.g. [[1,0],[0,1]]; symmetric positive definite. Blank: identity.",
        "Size limit (0: off)": "Greater than 0: multi-objective CMA-ES that keeps the weights within this distance of the prompt as written.",
        "Size limit error (-1: limit / 100)": "How far past the size limit a proposal may go before it is penalised. -1: limit / 100.",
        "Size limit weight (-1: limit x 10)": "Penalty per squared distance past the size limit. -1: limit x 10.",
        "Weight the loss by the Hyperbatch tree": "With a Hyperbatch sampler, score images level by level of the fork tree (siblings share early steps).",
        "Hyperbatch weight type": "How tree levels K are weighted: Geometric X^(scale/K), Exponential X(0.5+scale)^K, Polynomial (1+X)^(scale K).",
        "Hyperbatch weight scale": "The scale in the Hyperbatch weight formula.",
        "Hyperbatch weights with any sampler": "Apply the Hyperbatch weighting even with a plain sampler (images grouped by the tree the schedule would build).",
        "Hyperbatch fork strength": "Noise a Hyperbatch fork gives each child: 0 copies the parent, 1 adds one ancestral step's noise, more diverges further."
    });
})();
