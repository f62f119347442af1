// LoRA Trainer tab: the Dataset and Captions panels are long, and their job and message lines sit at the
// top. When one of those lines changes while it is scrolled out of view (a button far down was clicked, a
// job moved on), a copy of its text floats at the bottom of the window for a few seconds; a click closes
// it. Forge loads every extension's javascript/*.js; `python -m lora_trainer ui` puts it in the <head>.
(function () {
    "use strict";
    if (window.loraTrainerNotesReady) {
        return;
    }
    window.loraTrainerNotesReady = true;

    var LINES = ["lora_trainer_dataset_job_status", "lora_trainer_dataset_message",
                 "lora_trainer_captions_tag_status", "lora_trainer_captions_message"];
    var SHOW_MS = 8000;
    var ERROR_MS = 20000;
    var box = null;
    var timer = null;

    function hide() {
        if (box) {
            box.style.display = "none";
        }
    }

    function floatBox() {
        if (!box) {
            box = document.createElement("div");
            box.className = "lora-trainer-float";
            box.title = "click to close";
            box.addEventListener("click", hide);
            document.body.appendChild(box);
        }
        return box;
    }

    function scrolledAway(line) {
        var r = line.getBoundingClientRect();
        return line.offsetParent !== null && (r.bottom < 0 || r.top > window.innerHeight);
    }

    function changed(line) {
        // gradio redraws a line's block on every refresh: only a new text counts
        var note = line.querySelector(".lora-trainer-message");
        var text = note ? note.textContent : "";
        if (text === line.loraTrainerText) {
            return;
        }
        line.loraTrainerText = text;
        if (!note || !scrolledAway(line)) {
            return;
        }
        var error = note.classList.contains("lora-trainer-error");
        var b = floatBox();
        b.textContent = note.textContent;  // text only: nothing of the page is re-parsed
        b.classList.toggle("lora-trainer-error", error);
        b.style.display = "block";
        clearTimeout(timer);
        timer = setTimeout(hide, error ? ERROR_MS : SHOW_MS);
    }

    function watch() {
        var all = true;
        LINES.forEach(function (id) {
            var line = document.getElementById(id);
            if (!line) {
                all = false;
                return;
            }
            if (!line.loraTrainerWatched) {
                line.loraTrainerWatched = true;
                var first = line.querySelector(".lora-trainer-message");
                line.loraTrainerText = first ? first.textContent : "";
                new MutationObserver(function () { changed(line); })
                    .observe(line, {childList: true, subtree: true, characterData: true});
            }
        });
        return all;
    }

    // gradio builds the page after this script runs: look for the lines until they are all there
    var tries = 0;
    var search = setInterval(function () {
        tries += 1;
        if (watch() || tries > 600) {
            clearInterval(search);
        }
    }, 500);
})();
