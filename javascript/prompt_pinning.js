// Tooltips of the "Prompt pinning" script's controls. Their text comes from the options schema
// (lib_pinning/options.py) through a hidden element the script's UI renders: a JSON map from each control's
// elem_id to its tooltip. Each control's whole block gets the tooltip as its title, the file upload included.
(function() {
    function applyTooltips() {
        const root = typeof gradioApp === "function" ? gradioApp() : document;
        for (const holder of root.querySelectorAll(".prompt-pinning-tooltips[data-tooltips]")) {
            let tips;
            try {
                tips = JSON.parse(holder.dataset.tooltips);
            } catch (error) {
                continue;
            }
            for (const [id, text] of Object.entries(tips)) {
                const element = root.querySelector("#" + CSS.escape(id));
                if (element && element.title !== text) element.title = text;
            }
        }
    }
    if (typeof onUiLoaded === "function") onUiLoaded(applyTooltips);
    if (typeof onUiUpdate === "function") onUiUpdate(applyTooltips);
})();
