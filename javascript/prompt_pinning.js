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

// The Prompt evolution tab shows the newest run whenever it is opened (a reloaded page loses nothing: the run
// waits in the WebUI), by clicking its ↻ button.
(function() {
    document.addEventListener("click", function(event) {
        const tab = event.target.closest ? event.target.closest("#tabs .tab-nav button") : null;
        if (!tab || tab.textContent.trim() !== "Prompt evolution") return;
        setTimeout(function() {
            const root = typeof gradioApp === "function" ? gradioApp() : document;
            const button = root.querySelector("#prompt_evolution_refresh");
            if (button) button.click();
        }, 0);
    }, true);
})();
