// LoRA Trainer tab: a "copy" button beside each <lora:NAME:1> in the saved-LoRA list
// (lora_trainer/ui/render.py writes <button class="lora-trainer-copy" data-copy="...">).
// Forge loads every extension's javascript/*.js; `python -m lora_trainer ui` puts this file in the
// page's <head>. The list is redrawn every second, so one click listener on the document serves all
// buttons, present and future.
(function () {
    "use strict";
    if (window.loraTrainerCopyReady) {
        return;
    }
    window.loraTrainerCopyReady = true;

    // navigator.clipboard exists only on secure origins (https, localhost); a WebUI opened over the
    // network by plain http has none, and there a hidden textarea with execCommand('copy') still works.
    function copyWithTextarea(text) {
        var area = document.createElement("textarea");
        area.value = text;
        area.setAttribute("readonly", "");
        area.style.position = "fixed";
        area.style.top = "-1000px";
        area.style.opacity = "0";
        document.body.appendChild(area);
        area.select();
        var copied = false;
        try {
            copied = document.execCommand("copy");
        } catch (e) {
            copied = false;
        }
        document.body.removeChild(area);
        return copied ? Promise.resolve() : Promise.reject(new Error("the browser refused to copy"));
    }

    function copyText(text) {
        if (navigator.clipboard && window.isSecureContext) {
            return navigator.clipboard.writeText(text).catch(function () {
                return copyWithTextarea(text);
            });
        }
        return copyWithTextarea(text);
    }

    function selectBeside(button) {
        // Nothing could copy: select the prompt text so Ctrl+C does it.
        var code = button.parentElement && button.parentElement.querySelector("code");
        if (code) {
            var range = document.createRange();
            range.selectNodeContents(code);
            var selection = window.getSelection();
            selection.removeAllRanges();
            selection.addRange(range);
        }
    }

    function say(button, label) {
        button.textContent = label;
        clearTimeout(button.loraTrainerTimer);
        button.loraTrainerTimer = setTimeout(function () {
            button.textContent = "copy";
        }, 1500);
    }

    document.addEventListener("click", function (event) {
        var path = event.composedPath ? event.composedPath() : [event.target];
        var button = path.find(function (el) {
            return el.classList && el.classList.contains("lora-trainer-copy");
        });
        if (!button) {
            return;
        }
        event.preventDefault();
        copyText(button.dataset.copy).then(function () {
            say(button, "copied");
        }, function () {
            selectBeside(button);
            say(button, "press Ctrl+C");
        });
    });
})();
